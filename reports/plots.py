"""Bar plots of one metric per row (methods, then references) with 95 % intervals (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reports.aggregate import image_scores  # noqa: E402,F401 - kept importable from here
from reports.tables import ScoreTable  # noqa: E402

METHOD_COLOUR = "#4C78A8"
REFERENCE_COLOUR = "#9D9D9D"


def bar_figure(table: ScoreTable, column: str) -> Figure:
    """A bar per row of ``table`` for ``column`` with its interval; references grey, random-weight rows hatched."""
    col = table.column(column)
    values = table.mean[column]
    errors = table.ci95[column].fillna(0.0)
    labels = [str(r[-1] if isinstance(r, tuple) else r) for r in values.index]
    fig, ax = plt.subplots(figsize=(max(3.0, 1.0 + 0.55 * len(values)), 3.2), dpi=100)
    for i, row in enumerate(values.index):
        key = row[-1] if isinstance(row, tuple) else row
        ref = table.is_reference(row)
        random = bool(table.rows.loc[key, "random_weights"])
        ax.bar(i, 0.0 if pd.isna(values[row]) else values[row], yerr=errors[row], capsize=3,
               color=REFERENCE_COLOUR if ref else METHOD_COLOUR, hatch="//" if random else None,
               edgecolor="white" if random else None)
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
    unit = " (%)" if col.info.percent and not col.normalized else ""
    ax.set_ylabel(f"{col.id}{unit} {col.arrow}")
    ax.set_title(f"{col.id} ({col.metric}): mean ± 95% interval, {table.aggregation} aggregation\n"
                 "grey: references, hatched: random-weight images", fontsize=8)
    fig.tight_layout()
    return fig


def bar_plot(table: ScoreTable, column: str, path: Path) -> Path:
    """Write :func:`bar_figure` to ``path`` (PNG)."""
    fig = bar_figure(table, column)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
