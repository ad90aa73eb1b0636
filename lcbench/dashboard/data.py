"""What the results view reads, cached: the catalog, the score frame, the items, per-image scores, tables.

Every cache is keyed on a fingerprint of the run folders' files (how many, and the newest modification
time of the manifest, the spec, the item records and the score files), so a rescored or extended run is
read again on the next page, and an unchanged one is never read twice by one server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image

from bench.store import StoreError
from lcbench.study.runs import ImageItem, RunCatalog
from reports.aggregate import IMAGE_KEYS
from reports.boxes import draw_boxes
from reports.calibration import calibration_by_dataset, failing
from reports.load import load_scores
from reports.render import ReportOptions
from reports.tables import ScoreTable, overview, per_scene, prepare, table1, table2

NO_SCORES = "No scores yet: run `bench score` on these runs to fill Table 1 and the per-image scores."
Stamp = tuple[tuple[str, int, int], ...]


def _walk(folder: Path) -> tuple[int, int]:
    """(number of files, newest modification time in ns) under ``folder``."""
    count, newest = 0, 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            else:
                count += 1
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime_ns)
    return count, newest


def fingerprint(roots: Sequence[str | Path]) -> Stamp:
    """Per run folder: its path, how many files it holds (records, images, scores), the newest change."""
    out = []
    for root in roots:
        path = Path(root)
        count, newest = _walk(path / "items")
        s_count, s_newest = _walk(path / "scores")
        heads = [p.stat().st_mtime_ns for p in (path / "manifest.json", path / "spec.json") if p.is_file()]
        out.append((str(path), count + s_count, max([newest, s_newest, *heads])))
    return tuple(out)


@st.cache_resource(show_spinner=False, max_entries=8)
def catalog(roots: tuple[str, ...], stamp: Stamp) -> RunCatalog:
    """The runs' catalog (manifests and specs read once per fingerprint)."""
    return RunCatalog(list(roots))


def head_stamp(roots: Sequence[str | Path]) -> Stamp:
    """Per run folder: its path and the modification times of its manifest and spec (what a catalog reads)."""
    out = []
    for root in roots:
        times = [p.stat().st_mtime_ns if p.is_file() else 0
                 for p in (Path(root) / "manifest.json", Path(root) / "spec.json")]
        out.append((str(root), times[0], times[1]))
    return tuple(out)


def get_catalog(roots: Sequence[str | Path]) -> RunCatalog:
    """:func:`catalog` for the folders, read again when a manifest or spec changes."""
    return catalog(tuple(str(r) for r in roots), head_stamp(roots))


@dataclass(frozen=True)
class Scores:
    """One selection of runs' scores: the frame (None and a reason when there are none) and per-image values."""

    frame: pd.DataFrame | None
    reason: str | None
    per_image: dict[tuple[str, str, str, int], dict[str, float]]


@st.cache_resource(show_spinner=False, max_entries=8)
def scores(roots: tuple[str, ...], stamp: Stamp) -> Scores:
    """The runs' scores through :func:`reports.load.load_scores`, and each image's value per metric."""
    try:
        frame = load_scores(list(roots))
    except FileNotFoundError:
        return Scores(None, NO_SCORES, {})
    if frame.empty:
        return Scores(None, NO_SCORES, {})
    means = frame.groupby([*IMAGE_KEYS, "metric"], sort=False)["value"].mean()
    per_image: dict[tuple[str, str, str, int], dict[str, float]] = {}
    for (run, method, scene, _style, index, metric), value in means.items():
        per_image.setdefault((str(run), str(method), str(scene), int(index)), {})[str(metric)] = float(value)
    return Scores(frame, None, per_image)


@st.cache_resource(show_spinner=False, max_entries=8)
def items(roots: tuple[str, ...], stamp: Stamp, run_names: tuple[str, ...]) -> list[ImageItem]:
    """Every finished item of the chosen runs (records read once per fingerprint)."""
    return [it for it in catalog(roots, head_stamp(roots)).items(list(run_names)) if it.ok]


@st.cache_resource(show_spinner=False, max_entries=8)
def calibration(roots: tuple[str, ...], stamp: Stamp, k: float) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The calibration check per dataset on the whole frame (filters do not change whether a metric is
    calibrated) and the failing metrics with their reasons."""
    loaded = scores(roots, stamp)
    if loaded.frame is None:
        return {}, {}
    checks = calibration_by_dataset(loaded.frame, k)
    return checks, failing(checks)


@dataclass(frozen=True)
class Filters:
    """What the sidebar keeps: styles, concept counts, method rows (references always stay), scenes."""

    styles: tuple[str, ...]
    counts: tuple[int, ...]
    methods: tuple[str, ...]
    scenes: tuple[str, ...]


def filter_frame(frame: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """The score rows that pass the filters (reference rows pass the method filter)."""
    keep = (
        frame["style"].isin(list(filters.styles))
        & frame["n_concepts"].isin(list(filters.counts))
        & frame["scene"].isin(list(filters.scenes))
        & (frame["label"].isin(list(filters.methods)) | frame["reference"].notna())
    )
    out = frame[keep]
    out.attrs = frame.attrs
    return out


@st.cache_resource(show_spinner=False, max_entries=16)
def _prepared(roots: tuple[str, ...], stamp: Stamp, filters: Filters, pool: bool) -> Any:
    loaded = scores(roots, stamp)
    assert loaded.frame is not None
    part = filter_frame(loaded.frame, filters)
    return prepare(part, pool) if len(part) else None


@st.cache_resource(show_spinner=False, max_entries=64)
def table(name: str, roots: tuple[str, ...], stamp: Stamp, filters: Filters,
          options: ReportOptions) -> ScoreTable | None:
    """One table (``table1``, ``table2``, ``per_scene``, ``overview``) of the filtered scores; None when empty."""
    prep = _prepared(roots, stamp, filters, options.pool)
    if prep is None:
        return None
    _, bad = calibration(roots, stamp, options.k)
    common: dict[str, Any] = dict(aggregation=options.aggregation, pool=options.pool, uncalibrated=bad,
                                  show_uncalibrated=options.show_uncalibrated)
    if name == "table1":
        return table1(prep, **common)
    if name == "table2":
        first = table1(prep, **common)
        return table2(prep, None, first.attrs["i_metric"], first.attrs["t_metric"], v_metric=first.attrs["v_metric"],
                      c_metric=first.attrs["c_metric"], **common)
    if name == "per_scene":
        return per_scene(prep, **common)
    if name == "overview":
        return overview(prep, **common)
    raise ValueError(f"table: expected table1, table2, per_scene or overview (got {name!r})")


@st.cache_data(show_spinner=False, max_entries=4096)
def tile_png(path: str, mtime_ns: int, zoom: int, boxes: bool, scene_json: str | None, names: tuple[str, ...]) -> bytes:
    """An item's image as lossless PNG bytes, enlarged ``zoom`` times by nearest neighbour, boxes drawn
    (labels outside the boxes) when ``boxes`` and the scene is known."""
    import io
    import json

    from bench.spec import Region, Scene

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if boxes and scene_json is not None:
        data = json.loads(scene_json)
        regions = tuple(Region(concept=c, box=tuple(b), prompt="") for c, b in data["regions"])
        scene = Scene(id=data["id"], prompt="", width=rgb.width, height=rgb.height, regions=regions)
        out = draw_boxes(rgb, scene, zoom=zoom, names=list(names) or None)
    else:
        out = rgb if zoom <= 1 else rgb.resize((rgb.width * zoom, rgb.height * zoom), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    out.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_bytes(cat: RunCatalog, item: ImageItem, zoom: int, boxes: bool) -> bytes:
    """:func:`tile_png` of an item, its path checked by the catalog."""
    path = cat.image_path(item.run, item.relative_image or "")
    scene = cat.run(item.run).scene(item.scene)
    scene_json = None
    if scene is not None:
        import json

        scene_json = json.dumps({"id": scene.id, "regions": [[r.concept, list(r.box)] for r in scene.regions]})
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as err:
        raise StoreError(f"{path}: cannot read the image ({err})") from err
    return tile_png(str(path), mtime, zoom, boxes, scene_json, ())
