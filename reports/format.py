"""Printing a :class:`reports.tables.ScoreTable`: cells, Markdown, LaTeX and CSV, with the same marks everywhere.

A cell is ``mean ± half-width`` with the metric's fixed decimals (rates in percent); a header carries ``↑``/``↓``
(higher/lower is better), ``†`` when the column was scored with a random-weight model and ``✗`` when its
metric fails the calibration check (shown only on request). The best method per column is bold
(references never count); reference rows come after the methods, apart; rows whose images came from
random-weight models say ``random weights`` in their ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from reports.aggregate import INTERVAL
from reports.tables import Column, ScoreTable, aggregation_sentence, reference_kind

RANDOM_MARK = "†"
UNCALIBRATED_MARK = "✗"
RANDOM_ROW = "random weights"


def header(column: Column) -> str:
    """A column's printed header: id, direction arrow, and its marks."""
    marks = (f" {RANDOM_MARK}" if column.info.random_model else "") + (
        f" {UNCALIBRATED_MARK}" if column.uncalibrated else ""
    )
    return f"{column.id} {column.arrow}{marks}"


def cell(mean: float, half: float, decimals: int) -> str:
    """``mean ± half`` with ``decimals`` decimals; the mean alone when the interval is undefined; '–' for no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.{decimals}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]  # no "-0.00"
    if half is None or (isinstance(half, float) and math.isnan(half)):
        return text
    return f"{text} ± {half:.{decimals}f}"


def row_type(table: ScoreTable, row: Any) -> str:
    """'method', or 'reference (<kind>)'."""
    kind = reference_kind(table.rows, row)
    return "method" if kind is None else f"reference ({kind})"


def has_references(table: ScoreTable) -> bool:
    """True when the table shows a reference row."""
    return any(table.is_reference(r) for r in table.mean.index)


def has_random_rows(table: ScoreTable) -> bool:
    """True when a shown row's images came from random-weight models."""
    return any(bool(table.rows.loc[_key(r), "random_weights"]) for r in table.mean.index)


def _key(row: Any) -> Any:
    return row[-1] if isinstance(row, tuple) else row


def display_frame(table: ScoreTable, bold: Callable[[str], str] = lambda s: s) -> pd.DataFrame:
    """The table as strings, index kept: ``type`` (when references are shown), ``n``, the metric columns,
    ``notes`` (when a row has random weights). ``bold`` wraps the best cells."""
    best = table.best()
    out = pd.DataFrame(index=table.mean.index)
    if has_references(table):
        out["type"] = [row_type(table, r) for r in table.mean.index]
    out["n"] = [("–" if pd.isna(v) else str(int(v))) for v in table.n.reindex(table.mean.index)]
    for col in table.columns:
        winners = set(best.get(col.id, []))
        values = []
        for row in table.mean.index:
            text = cell(table.mean.at[row, col.id], table.ci95.at[row, col.id], col.decimals)
            values.append(bold(text) if row in winners and text != "–" else text)
        out[header(col)] = values
    if has_random_rows(table):
        out["notes"] = [RANDOM_ROW if table.rows.loc[_key(r), "random_weights"] else "" for r in table.mean.index]
    return out


def legend(table: ScoreTable) -> list[str]:
    """The lines printed under a table: marks, aggregation, interval, and the table's own notes."""
    lines = [
        f"Aggregation: {aggregation_sentence(table.aggregation)}.",
        f"Cells: mean ± {INTERVAL}. ↑/↓: higher/lower is better; bold: best method per column "
        "(references excluded).",
    ]
    random_cols = sorted({c.info.model or "?" for c in table.columns if c.info.random_model})
    if random_cols:
        lines.append(f"{RANDOM_MARK}: scored with a random-weight model ({', '.join(random_cols)}): no signal.")
    if any(c.uncalibrated for c in table.columns):
        lines.append(f"{UNCALIBRATED_MARK}: the metric fails the calibration check on this dataset (kept on request).")
    if has_random_rows(table):
        lines.append(f"'{RANDOM_ROW}': the row's images came from random-weight models (a floor, not a result).")
    return lines + list(table.notes)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(table: ScoreTable | pd.DataFrame, with_legend: bool = True) -> str:
    """A GitHub-flavoured Markdown table; reference rows after a ``*references*`` separator row."""
    if isinstance(table, pd.DataFrame):
        return _plain_markdown(table)
    frame = display_frame(table, bold=lambda s: f"**{s}**").reset_index()
    columns = list(frame.columns)
    lines = ["| " + " | ".join(_md_escape(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    seen_reference = False
    for i, row in enumerate(table.mean.index):
        if table.is_reference(row) and not seen_reference and i > 0 and not isinstance(row, tuple):
            lines.append("| *references* |" + " |" * (len(columns) - 1))
        seen_reference = seen_reference or table.is_reference(row)
        lines.append("| " + " | ".join(_md_escape(v) for v in frame.iloc[i].tolist()) + " |")
    text = "\n".join(lines)
    if with_legend:
        text += "\n\n" + "\n".join(f"- {line}" for line in legend(table))
    return text


def _plain_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    flat = frame.reset_index()
    cells = [
        [f"{v:.{digits}f}" if isinstance(v, float) else "–" if v is None else str(v) for v in row]
        for row in flat.itertuples(False)
    ]
    header_line = "| " + " | ".join(_md_escape(c) for c in flat.columns) + " |"
    rule = "|" + "|".join("---" for _ in flat.columns) + "|"
    return "\n".join([header_line, rule, *("| " + " | ".join(_md_escape(c) for c in r) + " |" for r in cells)])


LATEX_SUBS = (
    ("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
    ("{", r"\{"), ("}", r"\}"), ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"),
    ("†", r"$^\dagger$"), ("✗", r"$\times$"), ("–", "--"),
)  # fmt: skip


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular cell (arrows, ±, marks as math)."""
    out = []
    for ch in str(text):
        out.append(next((sub for a, sub in LATEX_SUBS if a == ch), ch))
    return "".join(out)


def to_latex(table: ScoreTable) -> str:
    """A booktabs ``tabular``: best cells in ``\\textbf``, a ``\\midrule`` before the reference rows."""
    frame = display_frame(table, bold=lambda s: f"\x00{s}\x01").reset_index()
    columns = list(frame.columns)
    spec = "l" * len(table.index_names) + "l" * (len(columns) - len(table.index_names))
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(latex_escape(c) for c in columns) + r" \\",
             "\\midrule"]
    seen_reference = False
    for i, row in enumerate(table.mean.index):
        if table.is_reference(row) and not seen_reference and i > 0 and not isinstance(row, tuple):
            lines.append("\\midrule")
        seen_reference = seen_reference or table.is_reference(row)
        values = [latex_escape(v).replace("\x00", r"\textbf{").replace("\x01", "}") for v in frame.iloc[i].tolist()]
        lines.append(" & ".join(values) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv_frame(table: ScoreTable) -> pd.DataFrame:
    """Numbers for a CSV: per row ``type``, ``random_weights``, ``n``, each column's mean and ``<id> ci95``,
    and ``best_in`` (the columns where the row is the best method)."""
    best = table.best()
    out = pd.DataFrame(index=table.mean.index)
    out["type"] = [row_type(table, r) for r in table.mean.index]
    out["random_weights"] = [bool(table.rows.loc[_key(r), "random_weights"]) for r in table.mean.index]
    out["n"] = table.n.reindex(table.mean.index).to_numpy()
    for col in table.columns:
        out[col.id] = table.mean[col.id]
        if not col.normalized:
            out[f"{col.id} ci95"] = table.ci95[col.id]
    out["best_in"] = [";".join(c for c, rows in best.items() if r in rows) for r in table.mean.index]
    return out


def to_csv(table: ScoreTable) -> str:
    """:func:`to_csv_frame` as CSV text (6 decimals)."""
    return to_csv_frame(table).to_csv(float_format="%.6f")
