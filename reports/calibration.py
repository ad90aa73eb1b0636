"""The calibration check: does a metric order a right answer above wrong ones by more than the seed noise?

For each metric key, with the calibration references scored like any method (``bench score`` makes them),
the check passes when, in the metric's own direction,

    oracle  >  swapped  >  blank   and   swapped  >  noise,

each gap at least ``k`` standard deviations of the seed-to-seed spread. A reference's spread: its image
scores (regions averaged) are averaged over scenes per seed (a seed is a (run, seed index) pair), and the
standard deviation (ddof=1) is taken over those per-seed means; a gap between two references is compared
with ``k`` times the larger of their two deviations. The measured means are the means of the per-seed means.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from reports.aggregate import image_scores
from reports.info import FLOOR_BLANK, NOISE, ORACLE, SWAPPED, metric_info

ROLES = {"oracle": ORACLE, "swapped": SWAPPED, "blank": FLOOR_BLANK, "noise": NOISE}
PAIRS = (("oracle", "swapped"), ("swapped", "blank"), ("swapped", "noise"))
COLUMNS = (
    "passed", "oracle", "swapped", "blank", "noise",
    "gap_oracle_swapped", "gap_swapped_blank", "gap_swapped_noise",
    "need_oracle_swapped", "need_swapped_blank", "need_swapped_noise",
    "std_oracle", "std_swapped", "std_blank", "std_noise", "seeds", "higher_is_better", "reason",
)  # fmt: skip


def seed_means(frame: pd.DataFrame, metric: str, method: str) -> pd.Series:
    """One reference's per-seed means over scenes (a seed: a (run, seed index) pair) for ``metric``."""
    part = frame[(frame["method"] == method) & (frame["metric"] == metric)]
    if part.empty:
        return pd.Series(dtype=float)
    images = image_scores(part, metric)
    return images.groupby(["run", "index"])["value"].mean()


def _direction(frame: pd.DataFrame, metric: str) -> bool:
    infos = frame.attrs.get("metrics") or {}
    if metric in infos:
        return bool(infos[metric].higher_is_better)
    kind = frame.loc[frame["metric"] == metric, "kind"].iloc[0]
    return metric_info(metric, {"metric": metric, "kind": kind}).higher_is_better


def _seed_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (metric, reference method): mean and std (ddof=1) of the per-seed means, and the number of seeds."""
    part = frame[frame["method"].isin(list(ROLES.values()))]
    if part.empty:
        return pd.DataFrame(columns=["mean", "std", "seeds"])
    images = part.groupby(["metric", "method", "run", "scene", "index"], sort=False)["value"].mean()
    per_seed = images.groupby(level=["metric", "method", "run", "index"], sort=False).mean()
    return per_seed.groupby(level=["metric", "method"], sort=False).agg(["mean", "std", "count"]).rename(
        columns={"count": "seeds"})


def _check_one(stats: pd.DataFrame, metric: str, k: float, higher: bool) -> dict[str, object]:
    sign = 1.0 if higher else -1.0
    out: dict[str, object] = {"higher_is_better": higher}
    missing, counts = [], []
    for role, method in ROLES.items():
        found = (metric, method) in stats.index
        row = stats.loc[(metric, method)] if found else None
        out[role] = float(row["mean"]) if row is not None else np.nan
        out[f"std_{role}"] = float(row["std"]) if row is not None and row["seeds"] > 1 else np.nan
        counts.append(int(row["seeds"]) if row is not None else 0)
        if not found:
            missing.append(method)
    out["seeds"] = min(counts)
    for a, b in PAIRS:
        out[f"gap_{a}_{b}"] = sign * (out[a] - out[b])  # type: ignore[operator]
        out[f"need_{a}_{b}"] = k * max(out[f"std_{a}"], out[f"std_{b}"])  # type: ignore[type-var]
    if missing:
        out.update(passed=None, reason=f"not checked: no scores of {', '.join(missing)}")
        return out
    if out["seeds"] < 2:  # type: ignore[operator]
        out.update(passed=False, reason="needs at least 2 seeds per reference to measure the seed spread")
        return out
    word = "above" if higher else "below (lower is better)"
    for a, b in PAIRS:
        gap, need = float(out[f"gap_{a}_{b}"]), float(out[f"need_{a}_{b}"])  # type: ignore[arg-type]
        if gap > 0 and gap >= need:
            continue
        shortfall = f"gap {gap:.3g} < {k:g} seed std = {need:.3g}" if gap > 0 else f"gap {gap:.3g}"
        out.update(passed=False, reason=f"{a} {out[a]:.4g} is not {word} {b} {out[b]:.4g} ({shortfall})")
        return out
    out.update(passed=True, reason="")
    return out


def calibration_check(frame: pd.DataFrame, k: float = 3.0) -> pd.DataFrame:
    """Per metric key (index): ``passed`` (True, False, or None when a reference is missing), the measured
    means of ``oracle``, ``swapped``, ``blank``, ``noise``, the direction-aware gaps ``gap_a_b`` with the
    ``need_a_b = k * max(std_a, std_b)`` they must reach, the seed spreads, and a one-line ``reason``.

    ``frame`` is :func:`reports.load.load_scores`'s frame of one dataset.
    """
    infos = frame.attrs.get("metrics") or {}
    checked = [m for m in frame["metric"].unique() if m not in infos or infos[m].calibrated]
    directions = {metric: _direction(frame, metric) for metric in checked}
    bare = frame[["metric", "method", "run", "scene", "index", "value"]].copy()
    bare.attrs = {}  # pandas deep-copies attrs on every operation
    stats = _seed_stats(bare)
    rows = {metric: _check_one(stats, metric, k, directions[metric]) for metric in sorted(directions)}
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(COLUMNS))
    table.index.name = "metric"
    table.attrs["k"] = k
    return table


def calibration_by_dataset(frame: pd.DataFrame, k: float = 3.0) -> dict[str, pd.DataFrame]:
    """:func:`calibration_check` for each dataset of the frame."""
    out = {}
    for dataset, part in frame.groupby(frame["dataset"].fillna("?")):
        part.attrs = frame.attrs
        out[str(dataset)] = calibration_check(part, k)
    return out


def failing(checks: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """Metric key -> reason, for every metric that fails the check on some dataset (not-checked ones pass)."""
    out: dict[str, str] = {}
    for dataset, table in checks.items():
        for metric, row in table.iterrows():
            if not pd.isna(row["passed"]) and not bool(row["passed"]):
                out.setdefault(str(metric), f"dataset {dataset}: {row['reason']}")
    return out
