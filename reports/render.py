"""``bench report RUN...``: tables, per-scene breakdown, plots and grids in one folder with an index file.

The index starts with the conventions of every number in it and the calibration check of every metric;
metrics that fail the check on a dataset are left out of Table 1/2 with the reason (``show_uncalibrated``
keeps them, marked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.spec import SpecError
from bench.store import StoreError, atomic_write_bytes
from metrics.api import CONVENTION_FIELDS
from reports.aggregate import INTERVAL, check_aggregation
from reports.agreement import agreement_section
from reports.calibration import calibration_by_dataset, failing
from reports.format import to_csv, to_latex, to_markdown
from reports.grids import image_grid
from reports.info import MetricInfo
from reports.load import load_scores
from reports.plots import bar_plot
from reports.tables import ScoreTable, aggregation_sentence, overview, per_scene, prepare, table1, table2

FORMATS = ("md", "latex", "csv")
INDEX = "index.md"


@dataclass(frozen=True)
class ReportOptions:
    """The choices a report (and the dashboard) makes about its numbers."""

    aggregation: str = "bench"
    pool: bool = False
    show_uncalibrated: bool = False
    k: float = 3.0
    variants: Mapping[str, str] | None = None
    i_metric: str | None = None
    t_metric: str | None = None


@dataclass
class Tables:
    """Every table of one report, computed from one score frame."""

    table1: ScoreTable
    table2: ScoreTable
    per_scene: ScoreTable
    overview: ScoreTable
    calibration: dict[str, pd.DataFrame]
    uncalibrated: dict[str, str]
    conventions: pd.DataFrame
    options: ReportOptions
    notes: list[str] = field(default_factory=list)


INTERVAL_SHORT = "95 % over images (seeds), scenes as strata"


def conventions_table(
    conventions: Mapping[str, Mapping[str, Any]], infos: Mapping[str, MetricInfo] | None = None,
    aggregation: str = "bench",
) -> pd.DataFrame:
    """One row per scored metric key: direction, how tables print it, the aggregation and interval the tables
    use, the scoring model, the description (which says how a variant differs from upstream) and every
    convention field."""
    infos = infos or {}
    rows = {}
    for key, conv in sorted(conventions.items()):
        info = infos.get(key)
        row: dict[str, Any] = {}
        if info is not None:
            row["direction"] = f"{info.arrow} {'higher' if info.higher_is_better else 'lower'} is better"
            row["shown as"] = (f"percent, {info.decimals} decimals" if info.percent else f"{info.decimals} decimals")
        row["aggregation"] = aggregation
        row["interval"] = INTERVAL_SHORT
        if info is not None:
            row["scorer"] = f"{info.model} (random weights)" if info.random_model else str(info.model)
            row["description"] = info.description or "-"
        row.update({f: "-" if conv.get(f) is None else conv[f] for f in CONVENTION_FIELDS})
        rows[key] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "metric"
    return table


def build_tables(df: pd.DataFrame, options: ReportOptions = ReportOptions()) -> Tables:
    """Table 1, Table 2, per scene, all metrics, the calibration check and the conventions of a score frame."""
    check_aggregation(options.aggregation)
    checks = calibration_by_dataset(df, options.k)
    bad = failing(checks)
    common = dict(aggregation=options.aggregation, pool=options.pool, uncalibrated=bad,
                  show_uncalibrated=options.show_uncalibrated)
    prep = prepare(df, options.pool)  # one frame, its aggregations shared by every table
    t1 = table1(prep, options.i_metric, options.t_metric, **common)
    t2 = table2(prep, options.variants, t1.attrs["i_metric"], t1.attrs["t_metric"], v_metric=t1.attrs["v_metric"],
                c_metric=t1.attrs["c_metric"], **common)
    return Tables(
        table1=t1, table2=t2, per_scene=per_scene(prep, **common), overview=overview(prep, **common),
        calibration=checks, uncalibrated=bad,
        conventions=conventions_table(df.attrs.get("conventions") or {}, df.attrs.get("metrics"), options.aggregation),
        options=options,
    )


def calibration_display(check: pd.DataFrame, infos: Mapping[str, MetricInfo] | None = None) -> pd.DataFrame:
    """The calibration check as printed: result, the four means, the three gaps with what they must reach."""
    infos = infos or {}
    rows = {}
    for metric, r in check.iterrows():
        info = infos.get(str(metric))
        scale, d = (info.scale, info.decimals) if info else (1.0, 3)

        def fmt(value: Any, scale: float = scale, d: int = d) -> str:
            return "–" if value is None or pd.isna(value) else f"{scale * float(value):.{d}f}"

        result = "not checked" if pd.isna(r["passed"]) else "pass" if bool(r["passed"]) else "FAIL"
        row = {"result": result, "direction": "↑" if r["higher_is_better"] else "↓"}
        row.update({name: fmt(r[name]) for name in ("oracle", "swapped", "blank", "noise")})
        for a, b in (("oracle", "swapped"), ("swapped", "blank"), ("swapped", "noise")):
            row[f"{a} - {b} (≥)"] = f"{fmt(r[f'gap_{a}_{b}'])} ({fmt(r[f'need_{a}_{b}'])})"
        row["seeds"] = "–" if pd.isna(r["seeds"]) else str(int(r["seeds"]))
        row["reason"] = r["reason"] or ""
        rows[metric] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "metric"
    return table


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_table(out: Path, name: str, table: ScoreTable | pd.DataFrame, formats: Sequence[str]) -> list[str]:
    written = []
    if "csv" in formats:
        text = to_csv(table) if isinstance(table, ScoreTable) else table.to_csv()
        _write_text(out / "tables" / f"{name}.csv", text)
        written.append(f"tables/{name}.csv")
    if "latex" in formats:
        text = to_latex(table) if isinstance(table, ScoreTable) else table.to_latex()
        _write_text(out / "tables" / f"{name}.tex", text)
        written.append(f"tables/{name}.tex")
    if "md" in formats:
        _write_text(out / "tables" / f"{name}.md", to_markdown(table) + "\n")
        written.append(f"tables/{name}.md")
    return written


def _plot_name(metric: str) -> str:
    return metric.replace("@", "_at_").replace(",", "_").replace("=", "-").replace(" %", "")


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    formats: Sequence[str] = ("md",),
    variants: Mapping[str, str] | None = None,
    i_metric: str | None = None,
    t_metric: str | None = None,
    grid_index: int = 0,
    *,
    aggregation: str = "bench",
    pool: bool = False,
    show_uncalibrated: bool = False,
    k: float = 3.0,
    study: Mapping[str, Any] | None = None,
) -> Path:
    """Write Table 1, Table 2, the per-scene breakdown, the calibration check, bar plots and image grids;
    return ``index.md``.

    ``formats`` picks the table files (md, latex, csv); the index is always Markdown. ``aggregation`` is
    ``bench`` or ``upstream`` (:mod:`reports.aggregate`); ``pool`` merges rows of runs with the same method key.
    ``study`` (a user study's ``answers`` and ``runs``) adds each metric's agreement with the ratings.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"--format: expected some of {list(FORMATS)} (got {bad[0]!r})")
    check_aggregation(aggregation)
    out = Path(out_dir)
    df = load_scores(list(run_dirs))
    if df.empty:
        raise ValueError(f"{', '.join(map(str, run_dirs))}: no scored items; run `bench score` first")
    options = ReportOptions(aggregation, pool, show_uncalibrated, k, variants, i_metric, t_metric)
    tables = build_tables(df, options)
    t1 = tables.table1
    infos = df.attrs.get("metrics") or {}
    lines = [
        "# Benchmark report",
        "",
        "Runs: " + ", ".join(f"`{Path(r)}`" for r in run_dirs),
        f"Datasets: {', '.join(sorted(df['dataset'].dropna().unique()))}",
        "",
        "## Conventions",
        "",
        to_markdown(tables.conventions),
        "",
        f"Table 1 and Table 2 use `{t1.attrs['i_metric']}` (I) and `{t1.attrs['t_metric']}` (T). "
        f"Aggregation of every table: {aggregation_sentence(aggregation)}. Intervals: {INTERVAL}. "
        f"Rows of runs with the same method key are {'pooled' if pool else 'kept apart (run:key)'}.",
        "",
        "## Calibration",
        "",
        f"Each metric must order oracle above swapped above both blank and noise (in its own direction), each "
        f"gap at least k = {k:g} seed standard deviations (per-seed means over scenes, ddof=1, the larger of the "
        "two references compared). Columns give the means and each gap with the size it must reach in brackets.",
        "",
    ]
    for dataset, check in tables.calibration.items():
        lines += [f"### calibration: {dataset}", "", to_markdown(calibration_display(check, infos)), ""]
    if tables.uncalibrated:
        verb = "kept, marked ✗ (--show-uncalibrated)" if show_uncalibrated else "left out of the tables"
        lines += [f"Failing metrics, {verb}:", "", *(f"- `{m}`: {why}" for m, why in tables.uncalibrated.items()), ""]
    lines += ["## Table 1", "", to_markdown(t1), ""]
    files = _write_table(out, "table1", t1, formats)
    if tables.table2.method_rows():
        lines += ["## Table 2 (ablation)", "", to_markdown(tables.table2), ""]
        files += _write_table(out, "table2", tables.table2, formats)
    files += _write_table(out, "per_scene", tables.per_scene, formats)
    files += _write_table(out, "all_metrics", tables.overview, formats)
    files += _write_table(out, "conventions", tables.conventions, formats)
    for dataset, check in tables.calibration.items():
        files += _write_table(out, f"calibration_{dataset}", calibration_display(check, infos), formats)
    lines += ["## All metrics (mean over styles)", "", to_markdown(tables.overview), "",
              "## Per scene", "", to_markdown(tables.per_scene), "", "## Plots", ""]
    for column in tables.overview.columns:
        name = _plot_name(column.metric)
        bar_plot(tables.overview, column.id, out / "plots" / f"{name}.png")
        lines.append(f"![{column.metric}](plots/{name}.png)")
    lines += ["", f"## Image grids (seed index {grid_index}, boxes drawn, nearest-neighbour scaling)", ""]
    for run_dir in run_dirs:
        try:
            grid = image_grid(run_dir, index=grid_index)
        except (StoreError, SpecError) as err:
            lines.append(f"- `{Path(run_dir).name}`: no grid ({err})")
            continue
        target = out / "grids" / f"{Path(run_dir).name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        grid.save(target)
        lines.append(f"![{Path(run_dir).name}](grids/{target.name})")
    lines += ["", *agreement_section(df, study)]  # metric-human (``study``: answers, runs) and box-judge agreement
    lines += ["", "## Files", "", *(f"- [{f}]({f})" for f in files), ""]
    index = out / INDEX
    _write_text(index, "\n".join(lines))
    return index
