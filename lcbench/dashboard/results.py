"""The results view: the report's tables (same code as ``bench report``), plots, and the images.

Filters in the sidebar (style, concept count, method, scene) apply to every table and every image.
Sections: tables (Table 1/2, calibration, conventions, downloads, row provenance), per scene, plots, and
three image views: the gallery (one scene and seed, every method), A/B (two methods side by side) and the
seeds strip (one method, every seed). Every image opens a drill-down with its record and the run's
manifest. Images are lossless PNG, enlarged by an integer zoom with nearest-neighbour sampling.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pandas as pd
import streamlit as st

from lcbench.dashboard import data
from lcbench.study.create import display_prompt
from lcbench.study.runs import ImageItem, RunCatalog
from reports.aggregate import AGGREGATIONS, INTERVAL
from reports.format import display_frame, header, legend, to_csv, to_latex
from reports.info import MetricInfo
from reports.render import ReportOptions, calibration_display, conventions_table
from reports.tables import ScoreTable, aggregation_sentence

SECTIONS = ("Tables", "Per scene", "Plots", "Images", "A/B", "Seeds")
BEST_STYLE = "font-weight: 700; background-color: #dff0d8"
REFERENCE_STYLE = "color: #666666; background-color: #f4f4f4"
PIXELATED = "<style>img { image-rendering: pixelated; }</style>"
GALLERY_COLUMNS = 4
ItemId = tuple[str, str, str, int]


# -- tables -----------------------------------------------------------------------------------------
def styled(table: ScoreTable) -> Any:
    """The table's display frame with the best method per column in bold and reference rows greyed."""
    frame = display_frame(table)
    best = table.best()

    def paint(column: pd.Series) -> list[str]:
        col = next((c for c in table.columns if header(c) == column.name), None)
        winners = set(best.get(col.id, [])) if col is not None else set()
        return [BEST_STYLE if row in winners else REFERENCE_STYLE if table.is_reference(row) else ""
                for row in column.index]

    return frame.style.apply(paint, axis=0)


def downloads(name: str, table: ScoreTable | pd.DataFrame) -> None:
    """CSV and LaTeX download buttons of one table; the files are made when a button is clicked."""
    left, right = st.columns(2)
    csv = partial(to_csv, table) if isinstance(table, ScoreTable) else table.to_csv
    tex = partial(to_latex, table) if isinstance(table, ScoreTable) else table.to_latex
    left.download_button(f"{name}: CSV", csv, file_name=f"{name}.csv", mime="text/csv", key=f"dl_{name}_csv")
    right.download_button(f"{name}: LaTeX", tex, file_name=f"{name}.tex", mime="text/x-tex", key=f"dl_{name}_tex")


def show_table(name: str, title: str, table: ScoreTable | None) -> None:
    """A table with its legend and download buttons."""
    st.subheader(title)
    if table is None or table.empty:
        st.info("No scores pass these filters.")
        return
    st.dataframe(styled(table), key=f"table_{name}")
    st.caption(" ".join(legend(table)))
    downloads(name, table)


def render_tables(roots: tuple[str, ...], stamp: data.Stamp, filters: data.Filters, options: ReportOptions,
                  scores: data.Scores, cat: RunCatalog) -> None:
    """Table 1, Table 2, the calibration check, the conventions, per-image scores and row provenance."""
    assert scores.frame is not None
    t1 = data.table("table1", roots, stamp, filters, options)
    show_table("table1", "Table 1: automatic scores per method", t1)
    t2 = data.table("table2", roots, stamp, filters, options)
    if t2 is not None and t2.method_rows():
        show_table("table2", "Table 2: ablation of LoRA-Composer", t2)
    checks, bad = data.calibration(roots, stamp, options.k)
    st.subheader("Calibration")
    st.caption(f"Each metric must order oracle above swapped above both blank and noise, each gap at least "
               f"k = {options.k:g} seed standard deviations; computed on all images of the runs.")
    infos = scores.frame.attrs.get("metrics") or {}
    for dataset, check in checks.items():
        shown = calibration_display(check, infos)
        st.dataframe(shown, key=f"calibration_{dataset}")
        downloads(f"calibration_{dataset}", shown)
    if bad:
        verb = "kept, marked ✗" if options.show_uncalibrated else "left out of the tables"
        st.warning("Failing metrics, " + verb + ": " + "; ".join(f"{m}: {why}" for m, why in bad.items()))
    st.subheader("Conventions")
    conventions = conventions_table(scores.frame.attrs.get("conventions") or {}, infos, options.aggregation)
    st.dataframe(conventions, key="conventions")
    st.caption(f"Aggregation: {aggregation_sentence(options.aggregation)}. Intervals: {INTERVAL}.")
    downloads("conventions", conventions)
    st.download_button("Per-image scores: CSV", partial(per_image_csv, scores.frame, filters),
                       file_name="per_image_scores.csv", mime="text/csv", key="dl_per_image_csv")
    if t1 is not None and not t1.empty:
        render_row_provenance(t1, cat)


def per_image_csv(frame: pd.DataFrame, filters: data.Filters) -> str:
    """The per-image scores of the rows that pass the filters, as CSV."""
    return per_image_frame(data.filter_frame(frame, filters)).to_csv(index=False)


def per_image_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per image and metric: the mean of its region rows, with the image's identity."""
    keys = ["run", "label", "method", "scene", "style", "index", "seed", "metric"]
    return frame.groupby(keys, sort=True, dropna=False)["value"].mean().reset_index()


def render_row_provenance(table: ScoreTable, cat: RunCatalog) -> None:
    """Pick a row of Table 1: its manifest entry (params, deviations, reference) and its run's revision."""
    with st.expander("Row provenance: the manifest entry behind a row"):
        row = st.selectbox("Row", list(table.mean.index), key="provenance_row")
        info = table.rows.loc[row]
        runs = [info["run"]] if info["run"] else list(cat.runs)
        for name in runs:
            run = cat.run(name)
            entry = (run.manifest.get("methods") or {}).get(info["method"])
            if entry is None:
                continue
            st.markdown(f"**run `{name}`** · git revision `{run.manifest.get('git_revision') or '-'}` · "
                        f"folder `{run.root}`")
            st.json({"method": info["method"], **entry}, expanded=True)


# -- images -----------------------------------------------------------------------------------------
def item_id(item: ImageItem) -> ItemId:
    """The identity of an item: (run, method, scene, index)."""
    return (item.run, item.method, item.scene, item.index)


def default_zoom(height: int) -> int:
    """An integer zoom that shows an image about 192 pixels high (1 for images that already are)."""
    return max(1, 192 // max(1, height))


def score_line(values: dict[str, float], infos: dict[str, MetricInfo]) -> str:
    """Per-image scores with each metric's decimals (rates in percent)."""
    parts = []
    for metric in sorted(values):
        info = infos.get(metric)
        if info is None:
            parts.append(f"{metric}: {values[metric]:.3f}")
        elif info.percent:
            parts.append(f"{metric}: {100 * values[metric]:.{info.decimals}f} %")
        else:
            parts.append(f"{metric}: {values[metric]:.{info.decimals}f}")
    return " · ".join(parts) or "no per-image scores"


def show_item(container: Any, cat: RunCatalog, item: ImageItem, scores: data.Scores, zoom: int, boxes: bool,
              key: str, caption: str | None = None) -> None:
    """One image with its caption, scores and a button that opens its drill-down."""
    png = data.image_bytes(cat, item, zoom, boxes)
    run = cat.run(item.run)
    reference = (run.manifest.get("methods", {}).get(item.method) or {}).get("reference")
    text = caption or f"{item.label} · seed {item.seed}" + (f" · reference ({reference})" if reference else "")
    container.image(png, caption=text, output_format="PNG", width=_png_width(png))
    infos = scores.frame.attrs.get("metrics", {}) if scores.frame is not None else {}
    container.caption(score_line(scores.per_image.get(_run_key(cat, item), {}), infos))
    container.button("Details", key=f"open_{key}", help="record, manifest and scores of this image",
                     on_click=_open_drill, args=(list(item_id(item)),))


def _open_drill(wanted: list[Any]) -> None:
    st.session_state["drill"] = wanted


def _run_key(cat: RunCatalog, item: ImageItem) -> tuple[str, str, str, int]:
    return (cat.run(item.run).root.name, item.method, item.scene, item.index)


def _png_width(png: bytes) -> int:
    return int.from_bytes(png[16:20], "big")  # the IHDR width of a PNG


def render_drill(cat: RunCatalog, items: list[ImageItem], scores: data.Scores, zoom: int, boxes: bool) -> None:
    """The drill-down of the image picked with a Details button: enlarged, with its record and manifest."""
    wanted = st.session_state.get("drill")
    if not wanted:
        return
    item = next((it for it in items if list(item_id(it)) == list(wanted)), None)
    if item is None:
        st.session_state.pop("drill", None)
        return
    run = cat.run(item.run)
    record = json.loads((run.root / f"items/{item.method}/{item.scene}/{item.index:03d}.json").read_text("utf-8"))
    with st.container(border=True):
        st.subheader(f"Drill-down: {item.label} · {item.scene} · seed {item.seed}")
        left, right = st.columns([1, 1])
        png = data.image_bytes(cat, item, zoom * 2, boxes)
        left.image(png, caption=f"{item.label}, {zoom * 2}× nearest neighbour", output_format="PNG",
                   width=_png_width(png))
        left.download_button("Image (PNG, native resolution)", cat.image_path(item.run, item.relative_image or "")
                             .read_bytes(), file_name=f"{item.method}_{item.scene}_{item.index}.png",
                             mime="image/png", key="dl_drill_png")
        scene = run.scene(item.scene)
        if scene is not None and run.spec is not None:
            right.markdown(f"**Prompt:** {display_prompt(run.spec, scene.prompt)}")
            for region in scene.regions:
                right.caption(f"{region.concept}: {display_prompt(run.spec, region.prompt)}")
        right.markdown(f"**Record** (`{record.get('image') or ''}`): seed {record.get('seed')}, "
                       f"{record.get('seconds', '-')} s, git revision `{run.manifest.get('git_revision') or '-'}`")
        right.json({k: record.get(k) for k in ("params", "deviations", "seed", "seconds", "models", "record",
                                                  "finished", "status")}, expanded=False)
        if scores.frame is not None:
            rows = scores.frame[(scores.frame["run"] == run.root.name) & (scores.frame["method"] == item.method)
                                & (scores.frame["scene"] == item.scene) & (scores.frame["index"] == item.index)]
            shown = rows[["metric", "concept", "region", "value"]]
            shown.attrs = {}  # the score frame's attrs hold MetricInfo objects, which Arrow cannot serialize
            right.dataframe(shown, hide_index=True, key="drill_scores")
        with right.expander("Run manifest"):
            st.json(run.manifest, expanded=False)
        if st.button("Close the drill-down", key="drill_close"):
            st.session_state.pop("drill", None)
            st.rerun()


def _scene_caption(cat: RunCatalog, item: ImageItem) -> None:
    run = cat.run(item.run)
    scene = run.scene(item.scene)
    if scene is not None and run.spec is not None:
        st.caption(f"Prompt: {display_prompt(run.spec, scene.prompt)}")


def render_gallery(cat: RunCatalog, shown: list[ImageItem], scores: data.Scores, boxes: bool) -> None:
    """One scene and seed, every method (then the references) side by side."""
    scenes = sorted({it.scene for it in shown})
    scene_id = st.selectbox("Scene", scenes, key="scene")
    indices = sorted({it.index for it in shown if it.scene == scene_id})
    index = st.selectbox("Seed index", indices, key="seed_index")
    row = sorted((it for it in shown if it.scene == scene_id and it.index == index),
                 key=lambda it: (_is_reference(cat, it), it.label))
    _scene_caption(cat, row[0])
    zoom = st.session_state.get("zoom") or default_zoom(_height(cat, row[0]))
    for start in range(0, len(row), GALLERY_COLUMNS):
        columns = st.columns(GALLERY_COLUMNS)
        for column, item in zip(columns, row[start:start + GALLERY_COLUMNS], strict=False):
            show_item(column, cat, item, scores, zoom, boxes, key=f"g_{'_'.join(map(str, item_id(item)))}")


def render_ab(cat: RunCatalog, shown: list[ImageItem], scores: data.Scores, boxes: bool) -> None:
    """Two methods on the same scene and seed, side by side, with the difference of their scores."""
    labels = sorted({it.label for it in shown}, key=lambda lab: (lab.startswith("ref-"), lab))
    if len(labels) < 2:
        st.info("A/B needs two methods among the filtered images.")
        return
    left, right = st.columns(2)
    a = left.selectbox("Method A", labels, index=0, key="ab_a")
    b = right.selectbox("Method B", labels, index=1, key="ab_b")
    scenes = sorted({it.scene for it in shown if it.label == a} & {it.scene for it in shown if it.label == b})
    if not scenes:
        st.info(f"{a} and {b} share no scene among the filtered images.")
        return
    scene_id = st.selectbox("Scene", scenes, key="ab_scene")
    indices = sorted({it.index for it in shown if it.label == a and it.scene == scene_id}
                     & {it.index for it in shown if it.label == b and it.scene == scene_id})
    index = st.selectbox("Seed index", indices, key="ab_seed")
    pair = [next(it for it in shown if it.label == lab and it.scene == scene_id and it.index == index)
            for lab in (a, b)]
    _scene_caption(cat, pair[0])
    zoom = st.session_state.get("zoom") or default_zoom(_height(cat, pair[0]))
    for column, item, side in zip(st.columns(2), pair, ("A", "B"), strict=True):
        show_item(column, cat, item, scores, zoom, boxes, key=f"ab{side}",
                  caption=f"{side}: {item.label} · seed {item.seed}")
    values = [scores.per_image.get(_run_key(cat, it), {}) for it in pair]
    common = sorted(set(values[0]) & set(values[1]))
    if common:
        st.dataframe(pd.DataFrame({"A": [values[0][m] for m in common], "B": [values[1][m] for m in common],
                                   "B - A": [values[1][m] - values[0][m] for m in common]}, index=common),
                     key="ab_scores")


def render_seeds(cat: RunCatalog, shown: list[ImageItem], scores: data.Scores, boxes: bool) -> None:
    """One method on one scene: every seed in a strip."""
    labels = sorted({it.label for it in shown}, key=lambda lab: (lab.startswith("ref-"), lab))
    left, right = st.columns(2)
    label = left.selectbox("Method", labels, key="strip_method")
    scenes = sorted({it.scene for it in shown if it.label == label})
    scene_id = right.selectbox("Scene", scenes, key="strip_scene")
    strip = sorted((it for it in shown if it.label == label and it.scene == scene_id), key=lambda it: it.index)
    _scene_caption(cat, strip[0])
    zoom = st.session_state.get("zoom") or default_zoom(_height(cat, strip[0]))
    columns = st.columns(max(1, len(strip)))
    for column, item in zip(columns, strip, strict=True):
        show_item(column, cat, item, scores, zoom, boxes, key=f"s_{item.index}",
                  caption=f"seed index {item.index} · seed {item.seed}")


def _height(cat: RunCatalog, item: ImageItem) -> int:
    scene = cat.run(item.run).scene(item.scene)
    return scene.height if scene is not None else 64


def _is_reference(cat: RunCatalog, item: ImageItem) -> bool:
    entry = cat.run(item.run).manifest.get("methods", {}).get(item.method) or {}
    return isinstance(entry, dict) and entry.get("reference") is not None


# -- the view ---------------------------------------------------------------------------------------
def default_filters(cat: RunCatalog, items: list[ImageItem]) -> data.Filters:
    """The filters' defaults: every style, concept count, method (references aside) and scene of ``items``."""
    return data.Filters(
        styles=tuple(sorted({it.style for it in items if it.style})),
        counts=tuple(sorted({it.n_concepts for it in items if it.n_concepts is not None})),
        methods=tuple(sorted({it.label for it in items if not _is_reference(cat, it)})),
        scenes=tuple(sorted({it.scene for it in items})),
    )


def fill_first_page_caches(cat: RunCatalog) -> None:
    """Read what the first page shows (every run, default filters and options: the scores, the items,
    Table 1 and 2, the calibration check) into the caches, so that the first visitor does not wait for it.
    ``bench dashboard`` calls this before its server answers."""
    names = tuple(cat.runs)
    roots = tuple(str(run.root) for run in cat.runs.values())
    stamp = data.fingerprint(roots)
    every = data.items(roots, stamp, names)
    if not every or data.scores(roots, stamp).frame is None:
        return
    filters, options = default_filters(cat, every), ReportOptions(AGGREGATIONS[0])
    for name in ("table1", "table2"):
        data.table(name, roots, stamp, filters, options)
    data.calibration(roots, stamp, options.k)


def sidebar_filters(cat: RunCatalog, items: list[ImageItem]) -> tuple[data.Filters, ReportOptions, bool]:
    """The filters and options in the sidebar; returns them and whether boxes are drawn."""
    side = st.sidebar
    side.header("Filters")
    every = default_filters(cat, items)
    chosen_styles = side.multiselect("Style", every.styles, default=every.styles, key="filter_style")
    chosen_counts = side.multiselect("Number of concepts", every.counts, default=every.counts, key="filter_concepts")
    chosen_methods = side.multiselect("Methods", every.methods, default=every.methods, key="filter_methods",
                                      help="calibration references are always shown")
    # scenes are independent of the other filters: they intersect
    chosen_scenes = side.multiselect("Scenes", every.scenes, default=every.scenes, key="filter_scenes")
    side.header("Options")
    pool = side.toggle("Pool runs with the same method key", value=False, key="pool")
    aggregation = side.selectbox("Aggregation", list(AGGREGATIONS), key="aggregation",
                                 help="bench: regions → image → scene → style; upstream: the official "
                                 "evaluation's mean per concept role, then over roles and layouts")
    uncalibrated = side.toggle("Show metrics that fail the calibration check", value=False, key="show_uncalibrated")
    boxes = side.toggle("Draw boxes", value=False, key="boxes")
    side.number_input("Zoom (0: automatic)", min_value=0, max_value=16, value=0, step=1, key="zoom",
                      help="integer enlargement with nearest-neighbour sampling")
    filters = data.Filters(tuple(chosen_styles), tuple(chosen_counts), tuple(chosen_methods), tuple(chosen_scenes))
    return filters, ReportOptions(aggregation, pool, uncalibrated), boxes


def filter_items(cat: RunCatalog, items: list[ImageItem], filters: data.Filters) -> list[ImageItem]:
    """The images that pass the filters (references pass the method filter)."""
    return [it for it in items
            if (it.style is None or it.style in filters.styles)
            and (it.n_concepts is None or it.n_concepts in filters.counts)
            and it.scene in filters.scenes
            and (it.label in filters.methods or _is_reference(cat, it))]


def render_results(cat: RunCatalog) -> None:
    """The whole results view."""
    st.header("Results")
    st.markdown(PIXELATED, unsafe_allow_html=True)
    names = list(cat.runs)
    runs = st.multiselect("Runs", names, default=names, key="runs")
    if not runs:
        st.info("Pick at least one run.")
        return
    for name in runs:
        if cat.run(name).spec_error:
            st.warning(f"run {name}: spec not loadable, boxes and filters are off ({cat.run(name).spec_error})")
    all_roots = tuple(str(r.root) for r in cat.runs.values())
    stamp_all = data.fingerprint(all_roots)
    roots = tuple(str(cat.run(name).root) for name in runs)
    stamp = tuple(s for s in stamp_all if s[0] in roots)
    every = data.items(all_roots, stamp_all, tuple(runs))
    if not every:
        st.info("These runs have no finished images yet.")
        return
    filters, options, boxes = sidebar_filters(cat, every)
    scores = data.scores(roots, stamp)
    section = st.radio("Section", list(SECTIONS), horizontal=True, key="section", label_visibility="collapsed")
    shown = filter_items(cat, every, filters)
    st.caption(f"{len(shown)} of {len(every)} images pass the filters (references always pass the method filter)")
    if section in ("Tables", "Per scene", "Plots"):
        if scores.frame is None:
            st.info(scores.reason)
            return
        if section == "Tables":
            render_tables(roots, stamp, filters, options, scores, cat)
        elif section == "Per scene":
            show_table("per_scene", "Per scene", data.table("per_scene", roots, stamp, filters, options))
        else:
            render_plots(data.table("overview", roots, stamp, filters, options))
        return
    if not shown:
        st.info("No image matches these filters.")
        return
    zoom = st.session_state.get("zoom") or default_zoom(_height(cat, shown[0]))
    render_drill(cat, shown, scores, zoom, boxes)
    if section == "Images":
        render_gallery(cat, shown, scores, boxes)
    elif section == "A/B":
        render_ab(cat, shown, scores, boxes)
    else:
        render_seeds(cat, shown, scores, boxes)


def render_plots(table: ScoreTable | None) -> None:
    """A bar plot per metric (mean over styles ± interval; references grey, random-weight rows hatched)."""
    if table is None or table.empty:
        st.info("No scores pass these filters.")
        return
    import matplotlib.pyplot as plt

    from reports.plots import bar_figure

    st.subheader("Plots")
    st.caption(f"Aggregation: {aggregation_sentence(table.aggregation)}. Intervals: {INTERVAL}.")
    for column in table.columns:
        fig = bar_figure(table, column.id)
        st.pyplot(fig, clear_figure=True)
        plt.close(fig)
