"""How score rows become a table cell: two named aggregations and one interval, the same for every table.

``bench`` (the default): the rows of one image (its regions, plus the background on the whole image) are
averaged into an image score; image scores are averaged per scene (over seeds, and over runs when rows
are pooled); scene means are averaged per style; ``Mean`` averages the styles present.

``upstream`` (the official Mix-of-Show / LoRA-Composer evaluation, ``compute_matric.py``): each concept
role of each layout is averaged over images; the style's value is the mean over every (layout, role)
pair of that style, so layouts with more concepts weigh more; ``Mean`` averages the styles present.

Both are means of *strata* means (strata: scenes for ``bench``, (scene, role) pairs for ``upstream``).
The 95 % interval is computed over images, the scenes (or roles) being the benchmark's fixed design and the
seeds the random part: half-width = 1.96 * sqrt(sum_s var_s / n_s) / S over the S strata, var_s the
sample variance (ddof=1) of stratum s's units and n_s their count; it is undefined (NaN) when a stratum
has fewer than two units. ``Mean`` combines the style means as independent: 1.96 * sqrt(sum se^2) / styles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

Z95 = 1.959964
AGGREGATIONS = ("bench", "upstream")
IMAGE_KEYS = ["run", "method", "scene", "style", "index"]


@dataclass(frozen=True)
class Aggregation:
    """A named aggregation and the sentence tables print about it."""

    name: str
    description: str


DESCRIPTIONS = {
    "bench": "bench: regions -> image mean -> scene mean over seeds -> style mean over scenes; "
    "Mean = mean of the styles present",
    "upstream": "upstream (official compute_matric.py): mean per (layout, concept role) over images -> "
    "mean over all (layout, role) pairs of a style; Mean = mean of the styles present",
}
INTERVAL = (
    "95 % interval over images (seeds random, scenes fixed): 1.96 * sqrt(sum_s var_s / n_s) / S over the "
    "S strata (scenes; (scene, role) pairs for upstream), var_s with ddof=1; '–' when a stratum has one image"
)


def check_aggregation(name: str) -> str:
    """``name`` when it is a known aggregation; else a ValueError naming the choices."""
    if name not in AGGREGATIONS:
        raise ValueError(f"--aggregation: expected one of {list(AGGREGATIONS)} (got {name!r})")
    return name


def image_scores(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per generated image: the mean of its region/concept rows for ``metric``."""
    part = df[df["metric"] == metric]
    if part.empty:
        raise KeyError(
            f"metric '{metric}': not in the scores; expected one of {sorted(df['metric'].unique())}"
        )
    return part.groupby(IMAGE_KEYS, as_index=False)["value"].mean()


def units(df: pd.DataFrame, metric: str | None, aggregation: str, row: str = "row") -> pd.DataFrame:
    """The units a metric is averaged over, with their stratum: ``metric, row, style, scene, stratum, value, image``.

    ``bench``: one unit per image (its rows averaged), stratum = scene. ``upstream``: one unit per
    (image, concept role) (a role's rows of one image averaged), stratum = (scene, role). ``metric`` None:
    every metric at once. ``image`` identifies the image (an integer).
    """
    check_aggregation(aggregation)
    part = df if metric is None else df[df["metric"] == metric]
    if part.empty:
        raise KeyError(f"metric '{metric}': not in the scores; expected one of {sorted(df['metric'].unique())}")
    keys = ["metric", row, *IMAGE_KEYS] + (["concept"] if aggregation == "upstream" else [])
    out = part.groupby(keys, as_index=False, dropna=False, observed=True, sort=False)["value"].mean()
    out["image"] = out.groupby(IMAGE_KEYS, sort=False).ngroup()
    if aggregation == "bench":
        out["stratum"] = out["scene"]
    else:
        out["stratum"] = out.groupby(["scene", "concept"], sort=False).ngroup()
    return out


def stratified(units_: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by``: ``mean`` (of strata means), ``ci95`` (half-width, see the module), ``n`` (images)."""
    by = list(by)
    strata = units_.groupby([*by, "stratum"], dropna=False)["value"].agg(["mean", "var", "count"]).reset_index()
    strata["var_n"] = strata["var"] / strata["count"]
    strata["single"] = strata["count"] < 2
    grouped = strata.groupby(by, dropna=False)
    out = grouped.agg(mean=("mean", "mean"), strata=("mean", "size"), var_n=("var_n", "sum"), single=("single", "any"))
    out["ci95"] = (Z95 * np.sqrt(out["var_n"]) / out["strata"]).where(~out["single"].astype(bool))
    out["n"] = units_.groupby(by, dropna=False)["image"].nunique()
    return out[["mean", "ci95", "n"]].reset_index()


def combine_styles(per_style: pd.DataFrame, row: str = "row") -> pd.DataFrame:
    """Per row: the mean of its style means, and the half-width of independent style means combined
    (NaN when a style's interval is undefined); ``n`` adds the styles' image counts."""
    work = per_style.assign(se2=(per_style["ci95"] / Z95) ** 2, undefined=per_style["ci95"].isna())
    grouped = work.groupby(row, dropna=False, sort=False)
    out = grouped.agg(mean=("mean", "mean"), count=("mean", "size"), se2=("se2", "sum"),
                      undefined=("undefined", "any"), n=("n", "sum"))
    out["ci95"] = (Z95 * np.sqrt(out["se2"]) / out["count"]).where(~out["undefined"].astype(bool))
    return out[["mean", "ci95", "n"]].reset_index()
