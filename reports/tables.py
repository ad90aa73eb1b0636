"""Table 1 (per method, per style), Table 2 (ablation variants) and the per-scene breakdown.

Every table is a :class:`ScoreTable`: per row and column the mean, the half-width of its 95 % interval
and the image count, plus what printing needs (direction, decimals, percent, random-weight scorers, the
aggregation used). The aggregation and the interval are described in :mod:`reports.aggregate`.

Rows: the methods, then the calibration references (oracle, probes, floors) kept apart. A row is a
method key; when two runs hold the same key they stay separate rows (``run:key``) unless ``pool=True``.
Rows whose images came from random-weight models are flagged. A normalized column per metric puts each
value on the scale 0 = floor (``ref-floor-base`` when scored, else ``ref-floor-blank``), 1 = oracle:
``(x - floor) / (oracle - floor)``, the same for both directions (1 is always the oracle's side).

Table 1 columns: ``<Style>-I``/``<Style>-T`` for each style present and ``Mean-I``/``Mean-T`` only when
there are two or more styles; ``Vanish-pct``/``Confuse-pct`` (rates in percent, the mean over the
styles present) when a box classifier scored them; then the normalized columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reports.aggregate import DESCRIPTIONS, check_aggregation, combine_styles, image_scores, stratified, units
from reports.info import FLOOR_BASE, FLOOR_BLANK, ORACLE, MetricInfo, metric_info, reference_rank

STYLES = (("anime", "Anime"), ("real", "Real"))
# Rate kinds -> (Table 1 column, the metric preferred when several of that kind were scored)
RATE_COLUMNS: Mapping[str, tuple[str, str]] = {"V": ("Vanish-pct", "vanishing"), "C": ("Confuse-pct", "confusion")}
NORM_LABELS = {"I": "I-norm", "T": "T-norm", "V": "Vanish-norm", "C": "Confuse-norm"}
NORM_DECIMALS = 2
# Table 2 labels -> method names (or store keys) of the LoRA-Composer ablation; a parameter everywhere.
DEFAULT_ABLATION: Mapping[str, str] = {
    "CE+CI+LR": "lora-composer",
    "CE+CI": "lora-composer-ce-ci",
    "CE": "lora-composer-ce",
    "none": "lora-composer-none",
}

__all__ = [
    "DEFAULT_ABLATION", "Column", "ScoreTable", "image_scores", "per_scene", "table1", "table2",
]  # fmt: skip


@dataclass(frozen=True)
class Column:
    """One numeric column: which metric, which style (None: all styles), normalized or not."""

    id: str
    metric: str
    info: MetricInfo
    style: str | None = None
    normalized: bool = False
    uncalibrated: bool = False

    @property
    def higher_is_better(self) -> bool:
        """Direction of the column (normalized columns: always higher)."""
        return True if self.normalized else self.info.higher_is_better

    @property
    def decimals(self) -> int:
        """Decimals printed."""
        return NORM_DECIMALS if self.normalized else self.info.decimals

    @property
    def arrow(self) -> str:
        """``↑`` or ``↓``."""
        return "↑" if self.higher_is_better else "↓"


@dataclass
class ScoreTable:
    """A table of means with intervals; ``mean`` and ``ci95`` are in printed units (rates in percent)."""

    title: str
    mean: pd.DataFrame
    ci95: pd.DataFrame
    n: pd.Series
    columns: list[Column]
    rows: pd.DataFrame  # per row: name, reference (kind or None), random_weights, run
    aggregation: str
    notes: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def index_names(self) -> list[str]:
        """Names of the row index levels."""
        return [str(n) for n in self.mean.index.names]

    def column(self, column_id: str) -> Column:
        """A column by id."""
        return next(c for c in self.columns if c.id == column_id)

    def is_reference(self, row: Any) -> bool:
        """True for a calibration reference row."""
        return reference_kind(self.rows, row) is not None

    def method_rows(self) -> list[Any]:
        """The index entries of method (not reference) rows."""
        return [r for r in self.mean.index if not self.is_reference(r)]

    def best(self) -> dict[str, list[Any]]:
        """Per column: the method rows with the best value at printed precision (references never count).

        In a table indexed by (style, scene, method) the best is taken within each scene.
        """
        out: dict[str, list[Any]] = {}
        methods = self.method_rows()
        nested = isinstance(self.mean.index, pd.MultiIndex)
        for col in self.columns:
            values = self.mean.loc[methods, col.id].round(col.decimals).dropna() if methods else pd.Series()
            groups = values.groupby(level=list(range(values.index.nlevels - 1))) if nested else [(None, values)]
            for _, part in groups:
                if part.empty:
                    continue
                target = part.max() if col.higher_is_better else part.min()
                out.setdefault(col.id, []).extend(part.index[part == target])
        return out

    @property
    def empty(self) -> bool:
        """True when the table has no rows."""
        return self.mean.empty


def _row_key(row: Any) -> Any:
    return row[-1] if isinstance(row, tuple) else row


def reference_kind(rows: pd.DataFrame, row: Any) -> str | None:
    """The reference kind of a table row (index entry), None for a method."""
    kind = rows.loc[_row_key(row), "reference"]
    return None if kind is None or (isinstance(kind, float) and np.isnan(kind)) else str(kind)


# -- helpers --------------------------------------------------------------------------------------
def _infos(df: pd.DataFrame) -> dict[str, MetricInfo]:
    known = dict(df.attrs.get("metrics") or {})
    for metric, kind in df.drop_duplicates("metric").set_index("metric")["kind"].items():
        if metric not in known:
            known[metric] = metric_info(str(metric), {"metric": metric, "kind": kind})
    return known


WORK_COLUMNS = ["run", "method", "method_name", "label", "reference", "random_weights", "scene", "style",
                "index", "concept", "metric", "kind", "value"]


class Prepared:
    """A score frame made ready for tables: row labels set (pooled or not), per-row facts, metric facts, and a
    memo of the aggregations already computed, so tables built from one frame share the work."""

    def __init__(self, df: pd.DataFrame, pool: bool = False):
        self.pool = pool
        self.infos = _infos(df)
        present = [c for c in WORK_COLUMNS if c in df.columns]
        data = pd.DataFrame({c: df[c] for c in present})  # no attrs: pandas deep-copies them on every operation
        if "label" not in data:
            data["label"] = data["method"]
        data["row"] = data["method"] if pool else data["label"]
        self.data = data
        self.rows = _row_info(data, pool)
        self._memo: dict[tuple[str, ...], pd.DataFrame] = {}

    def metrics(self) -> list[str]:
        """Every metric key of the frame, sorted."""
        return sorted(self.data["metric"].unique())

    def units(self, aggregation: str) -> pd.DataFrame:
        """:func:`reports.aggregate.units` of every metric at once (memoized)."""
        key = ("units", aggregation)
        if key not in self._memo:
            self._memo[key] = units(self.data, None, aggregation)
        return self._memo[key]

    def stats(self, metric: str, aggregation: str, by: tuple[str, ...]) -> pd.DataFrame:
        """:func:`reports.aggregate.stratified` of one metric grouped ``by`` (all metrics computed at once)."""
        key = ("stats", aggregation, *by)
        if key not in self._memo:
            self._memo[key] = stratified(self.units(aggregation), ["metric", *by])
        everything = self._memo[key]
        return everything[everything["metric"] == metric].drop(columns="metric")

    def combined(self, metric: str, aggregation: str) -> pd.DataFrame:
        """Per row: the styles' means combined (:func:`reports.aggregate.combine_styles`), indexed by row."""
        key = ("combined", metric, aggregation)
        if key not in self._memo:
            self._memo[key] = combine_styles(self.stats(metric, aggregation, ("row", "style"))).set_index("row")
        return self._memo[key]


def prepare(df: pd.DataFrame | Prepared, pool: bool = False) -> Prepared:
    """``df`` as a :class:`Prepared` (returned as is when it already is one with the same pooling)."""
    if isinstance(df, Prepared) and df.pool == pool:
        return df
    if isinstance(df, Prepared):
        raise ValueError("a Prepared frame was made with another pool setting")
    return Prepared(df, pool)


def _row_info(df: pd.DataFrame, pool: bool) -> pd.DataFrame:
    """Per row: display name, method key, reference kind, random weights, run (None when pooled)."""
    firsts = df.drop_duplicates("row").set_index("row")
    runs = df.groupby("row", sort=False)["run"].nunique()
    random = df.groupby("row", sort=False)["random_weights"].any()
    refs = df.dropna(subset=["reference"]).drop_duplicates("row").set_index("row")["reference"]
    frame = pd.DataFrame(index=pd.Index(list(firsts.index), name="row"))
    frame["name"] = firsts["method_name"].astype(str)
    frame["method"] = firsts["method"].astype(str)
    frame["reference"] = pd.Series([str(refs[r]) if r in refs.index else None for r in frame.index],
                                   index=frame.index, dtype=object)
    frame["random_weights"] = random.reindex(frame.index).fillna(False).astype(bool)
    single = runs.reindex(frame.index) == 1
    frame["run"] = pd.Series([None if pool or not single[r] else str(firsts.loc[r, "run"]) for r in frame.index],
                             index=frame.index, dtype=object)
    return frame


REFERENCE_ROWS = ("ref-oracle", "ref-swapped", "ref-floor-base", "ref-floor-blank", "ref-noise")


def _order(rows: pd.DataFrame) -> list[str]:
    """Methods first (by label), then references: oracle, swapped, floors, noise, then any other by kind."""
    def key(r: Any) -> tuple[int, int, str]:
        method = rows.loc[r, "method"]
        known = REFERENCE_ROWS.index(method) if method in REFERENCE_ROWS else len(REFERENCE_ROWS)
        return (reference_rank(reference_kind(rows, r)) >= 0, known, str(r))

    return sorted(rows.index, key=key)


def _styles(df: pd.DataFrame) -> list[tuple[str, str]]:
    present = list(df["style"].dropna().unique())
    known = [(s, label) for s, label in STYLES if s in present]
    return known + [(s, str(s).capitalize()) for s in sorted(present) if s not in dict(STYLES)]


def _normalize(values: pd.Series, rows: pd.DataFrame) -> pd.Series:
    """``(x - floor) / (oracle - floor)`` per entry of ``values`` (indexed by row, or by (..., row)), with the
    oracle and floor of the same run (pooled rows: the pooled references) and the same outer keys (scene)."""
    levels = list(values.index.names)
    names = [n if n is not None else f"level_{i}" for i, n in enumerate(levels)]
    frame = values.rename("x").rename_axis(names).reset_index()
    row = names[-1]
    frame["group"] = frame[row].map(rows["run"].astype(object).where(rows["run"].notna(), "")).fillna("")
    frame["method"] = frame[row].map(rows["method"])
    context = [*names[:-1], "group"]

    def level(method: str) -> pd.Series:
        return frame[frame["method"] == method].drop_duplicates(context).set_index(context)["x"]

    top = level(ORACLE)
    bottom = level(FLOOR_BASE).combine_first(level(FLOOR_BLANK)) if len(level(FLOOR_BASE)) else level(FLOOR_BLANK)
    keys = pd.MultiIndex.from_frame(frame[context]) if len(context) > 1 else pd.Index(frame["group"])
    t = top.reindex(keys).to_numpy(dtype=float)
    b = bottom.reindex(keys).to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(t != b, (frame["x"].to_numpy(dtype=float) - b) / (t - b), np.nan)
    return pd.Series(out, index=values.index, dtype=float)


def _floor_used(rows: pd.DataFrame) -> str | None:
    methods = set(rows["method"])
    if ORACLE not in methods:
        return None
    return FLOOR_BASE if FLOOR_BASE in methods else FLOOR_BLANK if FLOOR_BLANK in methods else None


@dataclass
class _Builder:
    """Collects columns of a row-indexed table."""

    index: pd.Index
    mean: dict[str, pd.Series] = field(default_factory=dict)
    ci95: dict[str, pd.Series] = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)

    def add(self, column: Column, stats: pd.DataFrame, scale: float = 1.0) -> None:
        stats = stats.reindex(self.index)
        if stats["mean"].isna().all():
            return  # a column is shown only where it carries data
        self.mean[column.id] = scale * stats["mean"]
        self.ci95[column.id] = scale * stats["ci95"]
        self.columns.append(column)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        ids = [c.id for c in self.columns]
        mean = pd.DataFrame(self.mean, index=self.index).reindex(columns=ids)
        ci = pd.DataFrame(self.ci95, index=self.index).reindex(columns=ids)
        return mean, ci


def default_metric_pair(df: pd.DataFrame) -> tuple[str, str]:
    """The (image, text) metric keys Table 1 uses by default: ``clip_i``/``clip_t`` when scored."""
    metrics = set(df["metric"])
    for pair in (("clip_i", "clip_t"), ("clip_i@official", "clip_t@official")):
        if set(pair) <= metrics:
            return pair
    kinds = df.drop_duplicates("metric").set_index("metric")["kind"]
    i_keys, t_keys = sorted(kinds[kinds == "I"].index), sorted(kinds[kinds == "T"].index)
    if not i_keys or not t_keys:
        raise KeyError(f"Table 1 needs an image and a text metric; the scores hold {sorted(metrics)}")
    return i_keys[0], t_keys[0]


def default_rate_metric(df: pd.DataFrame, kind: str) -> str | None:
    """The metric key of a rate kind ('V' or 'C') Table 1 shows: the built-in name if scored, else the
    first key of that kind, else None."""
    kinds = df.drop_duplicates("metric").set_index("metric")["kind"].to_dict()
    preferred = RATE_COLUMNS[kind][1]
    if kinds.get(preferred) == kind:
        return preferred
    keys = sorted(m for m, k in kinds.items() if k == kind)
    return keys[0] if keys else None


def _drop_notes(metrics: Sequence[str], uncalibrated: Mapping[str, str], show: bool) -> tuple[list[str], list[str]]:
    kept, notes = [], []
    for m in metrics:
        if m in uncalibrated and not show:
            notes.append(f"`{m}` left out: fails the calibration check ({uncalibrated[m]}); "
                         "--show-uncalibrated keeps it, marked ✗")
        else:
            kept.append(m)
    return kept, notes


def table1(
    df: pd.DataFrame | Prepared,
    i_metric: str | None = None,
    t_metric: str | None = None,
    *,
    v_metric: str | None = None,
    c_metric: str | None = None,
    aggregation: str = "bench",
    pool: bool = False,
    uncalibrated: Mapping[str, str] | None = None,
    show_uncalibrated: bool = False,
    title: str = "Table 1",
) -> ScoreTable:
    """Per row (method or reference): n, style columns of the I and T metrics, rate columns, normalized columns.

    ``uncalibrated`` maps metric keys that fail the calibration check to the reason; their columns are left
    out (with a note) unless ``show_uncalibrated``, which keeps them marked.
    """
    check_aggregation(aggregation)
    prep = prepare(df, pool)
    data, rows, infos = prep.data, prep.rows, prep.infos
    if i_metric is None or t_metric is None:
        i_default, t_default = default_metric_pair(data)
        i_metric, t_metric = i_metric or i_default, t_metric or t_default
    rates = {"V": v_metric or default_rate_metric(data, "V"), "C": c_metric or default_rate_metric(data, "C")}
    uncalibrated = dict(uncalibrated or {})
    index = _order(rows)
    styles = _styles(data)
    wanted = [("I", i_metric), ("T", t_metric)] + [(k, m) for k, m in rates.items() if m is not None]
    kept, notes = _drop_notes([m for _, m in wanted], uncalibrated, show_uncalibrated)
    build = _Builder(pd.Index(index))
    shown = [(kind, metric) for kind, metric in wanted if metric in kept]
    overall = {metric: (kind, prep.combined(metric, aggregation)) for kind, metric in shown}
    pairs = [(kind, metric) for kind, metric in shown if kind not in RATE_COLUMNS]
    for style, label in [*styles, *([(None, "Mean")] if len(styles) > 1 else [])]:
        for kind, metric in pairs:  # Anime-I, Anime-T, Real-I, Real-T, Mean-I, Mean-T
            info = infos[metric]
            if style is None:
                stats = overall[metric][1]
            else:
                per_style = prep.stats(metric, aggregation, ("row", "style"))
                stats = per_style[per_style["style"] == style].set_index("row")
            build.add(Column(f"{label}-{kind}", metric, info, style, uncalibrated=metric in uncalibrated), stats,
                      info.scale)
    for kind, metric in shown:
        if kind in RATE_COLUMNS:
            info = infos[metric]
            build.add(Column(RATE_COLUMNS[kind][0], metric, info, None, uncalibrated=metric in uncalibrated),
                      overall[metric][1], info.scale)
    for metric, (kind, combined) in overall.items():
        normalized = _normalize(combined["mean"].reindex(index), rows)
        stats = pd.DataFrame({"mean": normalized, "ci95": np.nan})
        build.add(Column(NORM_LABELS.get(kind, f"{metric}-norm"), metric, infos[metric], None, True,
                         metric in uncalibrated), stats)
    mean, ci = build.frames()
    mean.index.name = ci.index.name = "method"
    n = _image_counts(prep, kept, ["row"]).reindex(index)
    table = ScoreTable(title, mean, ci, n, build.columns, rows.loc[index], aggregation, notes)
    table.attrs.update(i_metric=i_metric, t_metric=t_metric, v_metric=rates["V"], c_metric=rates["C"],
                       floor=_floor_used(rows), pool=pool)
    table.notes += _norm_note(table)
    return table


def _norm_note(table: ScoreTable) -> list[str]:
    if not any(c.normalized for c in table.columns):
        return []
    return [f"*-norm: (x - floor) / (oracle - floor) on the Mean (or only style) value, floor = "
            f"`{table.attrs.get('floor')}`, oracle = `{ORACLE}` of the same run (pooled rows: pooled references); "
            "1 = as good as the oracle, 0 = as the floor, in either direction"]


def _image_counts(prep: Prepared, metrics: Sequence[str], by: Sequence[str]) -> pd.Series:
    """Per group of ``by``: how many images have a score of one of ``metrics``."""
    everything = prep.units("bench")
    part = everything[everything["metric"].isin(list(metrics))] if metrics else everything
    return part.groupby(list(by), sort=False)["image"].nunique().rename("n")


def table2(
    df: pd.DataFrame | Prepared,
    variants: Mapping[str, str] | None = None,
    i_metric: str | None = None,
    t_metric: str | None = None,
    **options: Any,
) -> ScoreTable:
    """The ablation table: one row per variant label whose method (name or store key) was scored, then the
    reference rows. Columns and options as :func:`table1`'s.
    """
    variants = DEFAULT_ABLATION if variants is None else variants
    full = table1(df, i_metric, t_metric, title="Table 2 (ablation)", **options)
    picked: dict[str, Any] = {}
    for label, wanted in variants.items():
        keys = [k for k in full.method_rows() if k == wanted or full.rows.loc[k, "name"] == wanted
                or full.rows.loc[k, "method"] == wanted]
        if keys:
            picked[label] = keys[0]
    if not picked:
        empty = full.mean.iloc[:0]
        return ScoreTable(full.title, empty, full.ci95.iloc[:0], full.n.iloc[:0], full.columns, full.rows.iloc[:0],
                          full.aggregation, full.notes, dict(full.attrs))
    refs = [r for r in full.mean.index if full.is_reference(r)]
    source = [*picked.values(), *refs]
    labels = [*picked.keys(), *refs]
    mean = full.mean.loc[source].set_axis(labels)
    ci = full.ci95.loc[source].set_axis(labels)
    mean.index.name = ci.index.name = "variant"
    rows = full.rows.loc[source].set_axis(labels)
    table = ScoreTable(full.title, mean, ci, full.n.loc[source].set_axis(labels), full.columns, rows,
                       full.aggregation, full.notes, dict(full.attrs, variants=dict(picked)))
    return table


def per_scene(
    df: pd.DataFrame | Prepared,
    metrics: Sequence[str] | None = None,
    *,
    aggregation: str = "bench",
    pool: bool = False,
    uncalibrated: Mapping[str, str] | None = None,
    show_uncalibrated: bool = False,
) -> ScoreTable:
    """Rows (style, scene, row), one column per metric key (rates in percent, ``<key> %``) and one normalized
    column per metric (the scene's own oracle and floor). Intervals over that scene's images.
    """
    check_aggregation(aggregation)
    uncalibrated = dict(uncalibrated or {})
    prep = prepare(df, pool)
    data, rows, infos = prep.data, prep.rows, prep.infos
    wanted = list(metrics or prep.metrics())
    kept, notes = _drop_notes(wanted, uncalibrated, show_uncalibrated)
    order = {r: i for i, r in enumerate(_order(rows))}
    keys = data.drop_duplicates(["style", "scene", "row"])[["style", "scene", "row"]]
    keys = keys.assign(rank=keys["row"].map(order)).sort_values(["style", "scene", "rank"])
    index = pd.MultiIndex.from_frame(keys[["style", "scene", "row"]].astype(object))
    build = _Builder(index)
    per_metric = {}
    for metric in kept:
        info = infos[metric]
        stats = prep.stats(metric, aggregation, ("style", "scene", "row")).set_index(["style", "scene", "row"])
        label = f"{metric} %" if info.percent else metric
        build.add(Column(label, metric, info, None, uncalibrated=metric in uncalibrated), stats, info.scale)
        per_metric[metric] = stats["mean"]
    for metric, means in per_metric.items():
        normalized = _normalize(means.reindex(index), rows)
        build.add(Column(f"{metric} norm", metric, infos[metric], None, True, metric in uncalibrated),
                  pd.DataFrame({"mean": normalized, "ci95": np.nan}))
    mean, ci = build.frames()
    mean.index = ci.index = index.set_names(["style", "scene", "method"])
    counts = _image_counts(prep, kept, ["style", "scene", "row"]).reindex(index)
    counts.index = mean.index
    table = ScoreTable("Per scene", mean, ci, counts, build.columns, rows, aggregation, notes)
    table.attrs.update(floor=_floor_used(rows), pool=pool)
    return table


def aggregation_sentence(name: str) -> str:
    """The sentence a table prints about its aggregation."""
    return DESCRIPTIONS[check_aggregation(name)]


def overview(
    df: pd.DataFrame | Prepared,
    metrics: Sequence[str] | None = None,
    *,
    aggregation: str = "bench",
    pool: bool = False,
    uncalibrated: Mapping[str, str] | None = None,
    show_uncalibrated: bool = False,
) -> ScoreTable:
    """Per row, one column per metric key: the mean over the styles present (rates in percent, ``<key> %``)."""
    check_aggregation(aggregation)
    uncalibrated = dict(uncalibrated or {})
    prep = prepare(df, pool)
    rows, infos = prep.rows, prep.infos
    kept, notes = _drop_notes(list(metrics or prep.metrics()), uncalibrated, show_uncalibrated)
    index = _order(rows)
    build = _Builder(pd.Index(index))
    for metric in kept:
        info = infos[metric]
        combined = prep.combined(metric, aggregation)
        label = f"{metric} %" if info.percent else metric
        build.add(Column(label, metric, info, None, uncalibrated=metric in uncalibrated), combined, info.scale)
    mean, ci = build.frames()
    mean.index.name = ci.index.name = "method"
    n = _image_counts(prep, kept, ["row"]).reindex(index)
    table = ScoreTable("All metrics", mean, ci, n, build.columns, rows.loc[index], aggregation, notes)
    table.attrs.update(pool=pool)
    return table
