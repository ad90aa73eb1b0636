"""Bar plots of metric means per method with 95 % confidence intervals (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from reports.tables import image_scores  # noqa: E402

Z95 = 1.959964


def mean_ci(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per method: mean of the image scores, and the half-width of a normal 95 % CI (1.96 x SEM)."""
    scores = image_scores(df, metric).groupby("method")["value"]
    out = pd.DataFrame({"mean": scores.mean(), "n": scores.count(), "std": scores.std(ddof=1)})
    out["ci95"] = Z95 * out["std"].fillna(0.0) / np.sqrt(out["n"])
    return out


def bar_plot(df: pd.DataFrame, metric: str, path: Path) -> Path:
    """Write a bar plot of ``metric`` per method with 95 % CI error bars to ``path`` (PNG)."""
    stats = mean_ci(df, metric)
    fig, ax = plt.subplots(figsize=(max(3.0, 1.0 + 0.8 * len(stats)), 3.2), dpi=100)
    ax.bar(stats.index, stats["mean"], yerr=stats["ci95"], capsize=4, color="#4C78A8")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over images, 95% CI (1.96 SEM)", fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
