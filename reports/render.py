"""``bench report RUN...``: tables, per-scene breakdown, plots and grids in one folder with an index file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.store import atomic_write_bytes
from metrics.api import CONVENTION_FIELDS
from reports.grids import image_grid
from reports.load import load_scores
from reports.plots import bar_plot
from reports.tables import per_scene, table1, table2

FORMATS = ("md", "latex", "csv")
INDEX = "index.md"


def to_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (index included), numbers with ``digits`` decimals."""
    frame = table.reset_index()
    cells = [
        [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        for row in frame.itertuples(False)
    ]
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([header, rule, *("| " + " | ".join(r) + " |" for r in cells)])


def conventions_table(conventions: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per scored metric key with every convention field: what each number means."""
    rows = {
        key: {f: "-" if conv.get(f) is None else conv[f] for f in CONVENTION_FIELDS}
        for key, conv in sorted(conventions.items())
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "metric"
    return table


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _write_table(out: Path, name: str, table: pd.DataFrame, formats: Sequence[str]) -> list[str]:
    written = []
    if "csv" in formats:
        _write_text(out / "tables" / f"{name}.csv", table.to_csv(float_format="%.6f"))
        written.append(f"tables/{name}.csv")
    if "latex" in formats:
        _write_text(out / "tables" / f"{name}.tex", table.to_latex(float_format="%.4f"))
        written.append(f"tables/{name}.tex")
    if "md" in formats:
        _write_text(out / "tables" / f"{name}.md", to_markdown(table) + "\n")
        written.append(f"tables/{name}.md")
    return written


def _rate_note(attrs: Mapping[str, Any]) -> list[str]:
    """The sentence explaining the Vanish-pct / Confuse-pct columns, when Table 1 has them."""
    shown = [(label, attrs[key]) for label, key in (("Vanish-pct", "v_metric"), ("Confuse-pct", "c_metric"))
             if attrs.get(key)]
    if not shown:
        return []
    names = ", ".join(f"`{label}` from `{metric}`" for label, metric in shown)
    return [
        "",
        f"Rates in percent (0-100) of the checked boxes, aggregated the same way: {names} (each box 0 or 1, "
        "read by the dataset's per-box classifier; lower is better). Per-scene columns `*-pct` are percent too.",
    ]


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    formats: Sequence[str] = ("md",),
    variants: Mapping[str, str] | None = None,
    i_metric: str | None = None,
    t_metric: str | None = None,
    grid_index: int = 0,
) -> Path:
    """Write Table 1, Table 2, the per-scene breakdown, bar plots and image grids; return ``index.md``.

    ``formats`` picks the table files (md, latex, csv); the index is always Markdown and starts with
    the conventions of every metric it shows.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"--format: expected some of {list(FORMATS)} (got {bad[0]!r})")
    out = Path(out_dir)
    df = load_scores(list(run_dirs))
    if df.empty:
        raise ValueError(f"{', '.join(map(str, run_dirs))}: no scored items; run `bench score` first")
    t1 = table1(df, i_metric, t_metric)
    t2 = table2(df, variants, t1.attrs["i_metric"], t1.attrs["t_metric"], v_metric=t1.attrs["v_metric"],
                c_metric=t1.attrs["c_metric"])
    scenes = per_scene(df)
    conventions = conventions_table(df.attrs["conventions"])
    lines = [
        "# Benchmark report",
        "",
        "Runs: " + ", ".join(f"`{Path(r)}`" for r in run_dirs),
        f"Datasets: {', '.join(sorted(df['dataset'].dropna().unique()))}",
        "",
        "## Conventions",
        "",
        to_markdown(conventions),
        "",
        f"Table 1 and Table 2 use `{t1.attrs['i_metric']}` (I) and `{t1.attrs['t_metric']}` (T). "
        "Aggregation: regions (and the background on the whole image) -> image mean -> "
        "scene mean over seeds -> style mean; Mean-* averages the styles present.",
        *_rate_note(t1.attrs),
        "",
        "## Table 1",
        "",
        to_markdown(t1),
        "",
    ]
    files = _write_table(out, "table1", t1, formats)
    if not t2.empty:
        lines += ["## Table 2 (ablation)", "", to_markdown(t2), ""]
        files += _write_table(out, "table2", t2, formats)
    files += _write_table(out, "per_scene", scenes, formats)
    files += _write_table(out, "conventions", conventions, formats)
    lines += ["## Per scene", "", to_markdown(scenes), "", "## Plots", ""]
    for metric in sorted(df["metric"].unique()):
        name = metric.replace("@", "_at_").replace(",", "_").replace("=", "-")
        bar_plot(df, metric, out / "plots" / f"{name}.png")
        lines.append(f"![{metric}](plots/{name}.png)")
    lines += ["", f"## Image grids (seed index {grid_index}, boxes drawn)", ""]
    for run_dir in run_dirs:
        grid = image_grid(run_dir, index=grid_index)
        target = out / "grids" / f"{Path(run_dir).name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        grid.save(target)
        lines.append(f"![{Path(run_dir).name}](grids/{target.name})")
    lines += ["", "## Files", "", *(f"- [{f}]({f})" for f in files), ""]
    index = out / INDEX
    _write_text(index, "\n".join(lines))
    return index
