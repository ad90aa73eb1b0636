"""The results view: score tables from ``reports`` and per-scene side-by-side images of every method."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import reports
from lcbench.study.runs import ImageItem, RunCatalog
from reports.boxes import draw_boxes

NO_SCORES = "No scores yet: run `bench score` on these runs to fill Table 1 and the per-image scores."


def load_scores(catalog: RunCatalog, runs: list[str]) -> tuple[pd.DataFrame | None, str | None]:
    """The runs' scores through ``reports.load_scores``, or None and the reason they are missing."""
    try:
        frame = reports.load_scores([catalog.run(r).root for r in runs])
    except FileNotFoundError:
        return None, NO_SCORES
    if frame is None or len(frame) == 0:
        return None, NO_SCORES
    return frame, None


def render_tables(frame: pd.DataFrame) -> None:
    """Table 1 and, where the runs hold ablation variants, Table 2."""
    st.subheader("Table 1: automatic scores per method")
    st.dataframe(reports.table1(frame))
    ablation = reports.table2(frame)
    if len(ablation):
        st.subheader("Table 2: ablation of LoRA-Composer")
        st.dataframe(ablation)


def image_scores(frame: pd.DataFrame | None, item: ImageItem) -> dict[str, float]:
    """One image's score per metric (the mean over its region rows), from ``reports.load_scores``'s frame."""
    if frame is None or not {"run", "method", "scene", "index", "metric", "value"} <= set(frame.columns):
        return {}
    rows = frame[
        (frame["run"] == item.run.split("/")[-1])
        & (frame["method"] == item.method)
        & (frame["scene"] == item.scene)
        & (frame["index"] == item.index)
    ]
    return {str(k): round(float(v), 4) for k, v in rows.groupby("metric")["value"].mean().items()}


def render_results(catalog: RunCatalog) -> None:
    """The whole results view."""
    st.header("Results")
    names = list(catalog.runs)
    runs = st.multiselect("Runs", names, default=names, key="runs")
    if not runs:
        st.info("Pick at least one run.")
        return
    for name in runs:
        if catalog.run(name).spec_error:
            st.warning(
                f"run {name}: spec not loadable, boxes and filters are off ({catalog.run(name).spec_error})"
            )
    frame, reason = load_scores(catalog, runs)
    if frame is None:
        st.info(reason)
    else:
        render_tables(frame)

    items = [it for it in catalog.items(runs) if it.ok]
    if not items:
        st.info("These runs have no finished images yet.")
        return
    st.subheader("Scenes side by side")
    styles = sorted({it.style for it in items if it.style})
    counts = sorted({it.n_concepts for it in items if it.n_concepts is not None})
    left, right = st.columns(2)
    chosen_styles = left.multiselect("Style", styles, default=styles, key="filter_style")
    chosen_counts = right.multiselect("Number of concepts", counts, default=counts, key="filter_concepts")
    shown = [
        it
        for it in items
        if (it.style is None or it.style in chosen_styles)
        and (it.n_concepts is None or it.n_concepts in chosen_counts)
    ]
    scenes = sorted({it.scene for it in shown})
    if not scenes:
        st.info("No scene matches these filters.")
        return
    scene_id = st.selectbox("Scene", scenes, key="scene")
    indices = sorted({it.index for it in shown if it.scene == scene_id})
    index = st.selectbox("Seed index", indices, key="seed_index")
    with_boxes = st.toggle("Draw boxes", value=False, key="boxes")
    row = sorted((it for it in shown if it.scene == scene_id and it.index == index), key=lambda it: it.label)
    scene = catalog.run(row[0].run).scene(scene_id)
    if scene is not None:
        st.caption(f"Prompt: {scene.prompt}")
    columns = st.columns(max(1, len(row)))
    for column, item in zip(columns, row, strict=False):
        image = catalog.open_image(item)
        item_scene = catalog.run(item.run).scene(item.scene)
        if with_boxes and item_scene is not None:
            image = draw_boxes(image, item_scene)
        column.image(image, caption=f"{item.label} · seed {item.seed}", width="stretch")
        scores = image_scores(frame, item)
        column.caption(" · ".join(f"{k}: {v}" for k, v in scores.items()) or "no per-image scores")
