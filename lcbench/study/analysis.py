"""Study results: the paper's Table 3 (mean rating with a 95% confidence interval) and rater agreement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import krippendorff
import numpy as np
import pandas as pd

CRITERIA = {"text_alignment": "Text-to-Image", "image_alignment": "Image-to-Image"}
Z95 = NormalDist().inv_cdf(0.975)


def answers_frame(answers: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The answers (as :meth:`StudyDB.answers` returns them) as a DataFrame, with typed columns."""
    columns = ["participant", "question", "label", "n_concepts", "text_alignment", "image_alignment"]
    frame = pd.DataFrame(list(answers))
    return frame if not frame.empty else pd.DataFrame(columns=columns)


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and half-width of its 95% confidence interval (normal approximation, z = 1.96) and the count.

    The half-width is NaN for fewer than two values.
    """
    data = np.asarray(values, dtype=float)
    n = int(data.size)
    if n == 0:
        return math.nan, math.nan, 0
    half = Z95 * float(data.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return float(data.mean()), half, n


def table3(answers: pd.DataFrame, by_concepts: bool = True) -> pd.DataFrame:
    """Mean rating and 95% CI per method (rows) and criterion, overall and per concept count.

    Columns are a MultiIndex (group, criterion, statistic) with group "all" or "N concepts" and
    statistic one of mean, ci95, n.
    """
    if answers.empty:
        return pd.DataFrame()
    groups: list[tuple[str, pd.DataFrame]] = [("all", answers)]
    if by_concepts:
        groups += [
            (f"{int(n)} concepts", part)
            for n, part in sorted(answers.groupby("n_concepts"), key=lambda g: g[0])
        ]
    rows: dict[str, dict[tuple[str, str, str], float]] = {}
    for group, part in groups:
        for label, per_method in part.groupby("label"):
            row = rows.setdefault(str(label), {})
            for column, name in CRITERIA.items():
                mean, half, n = mean_ci(per_method[column].tolist())
                row[(group, name, "mean")] = mean
                row[(group, name, "ci95")] = half
                row[(group, name, "n")] = n
    table = pd.DataFrame.from_dict(rows, orient="index").sort_index()
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["group", "criterion", "statistic"])
    table.index.name = "method"
    return table


def table3_text(table: pd.DataFrame, group: str = "all") -> pd.DataFrame:
    """One group of :func:`table3` formatted as 'mean ± ci (n)' strings, one column per criterion."""
    if table.empty or group not in table.columns.get_level_values(0):
        return pd.DataFrame()
    part = table[group]
    out = pd.DataFrame(index=part.index)
    for name in CRITERIA.values():
        out[name] = [
            "–"
            if pd.isna(m)
            else f"{m:.2f} ± {h:.2f} (n={int(n)})"
            if not pd.isna(h)
            else f"{m:.2f} (n={int(n)})"
            for m, h, n in zip(part[(name, "mean")], part[(name, "ci95")], part[(name, "n")], strict=True)
        ]
    return out


def reliability_matrix(answers: pd.DataFrame, criterion: str) -> np.ndarray:
    """Raters x questions matrix of one criterion's ratings, NaN where a rater did not answer."""
    if answers.empty:
        return np.empty((0, 0))
    pivot = answers.pivot(index="participant", columns="question", values=criterion)
    return pivot.to_numpy(dtype=float)


def agreement(answers: pd.DataFrame, level: str = "ordinal") -> dict[str, float]:
    """Krippendorff's alpha per criterion (NaN when fewer than two raters share a question)."""
    return {row["criterion"]: row["alpha"] for row in agreement_table(answers, level)}


NOT_SHARED = ("cannot be computed: fewer than two raters share a question (alpha compares ratings of the same "
              "question, so at least two raters must answer one)")
NO_VARIATION = "cannot be computed: every shared rating has the same value (alpha is 0/0)"


def agreement_table(answers: pd.DataFrame, level: str = "ordinal") -> list[dict[str, Any]]:
    """Per criterion: ``alpha`` (NaN when it cannot be computed), ``questions`` (rated by two or more raters),
    ``ratings`` (on those questions), ``raters`` and ``note`` (the sentence saying why alpha is missing)."""
    out = []
    for column, name in CRITERIA.items():
        matrix = reliability_matrix(answers, column)
        counts = np.sum(~np.isnan(matrix), axis=0) if matrix.size else np.array([], dtype=int)
        shared = counts >= 2
        pairable = matrix[:, shared] if matrix.size else np.empty((0, 0))
        values = np.unique(pairable[~np.isnan(pairable)]) if pairable.size else np.array([])
        row: dict[str, Any] = {"criterion": name, "alpha": math.nan, "questions": int(shared.sum()),
                               "ratings": int(counts[shared].sum()) if counts.size else 0,
                               "raters": int(matrix.shape[0]) if matrix.size else 0, "note": ""}
        if not shared.any():
            row["note"] = NOT_SHARED
        elif values.size < 2:
            row["note"] = NO_VARIATION
        else:
            row["alpha"] = float(
                krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=[1, 2, 3, 4, 5])
            )
        out.append(row)
    return out
