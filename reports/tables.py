"""Table 1 (per method, per style), Table 2 (ablation variants) and the per-scene breakdown.

Aggregation, the same for every table: the rows of one image (its regions, plus the background on
the whole image) are averaged into an image score; image scores are averaged per scene (over seeds
and runs); scene means are averaged per style. ``Mean-*`` is the average of the style columns present.

Rate metrics (kind ``V`` = concept vanishing, ``C`` = concept confusion: one 0/1 row per box) go
through the same aggregation and are shown as percentages (0-100): Table 1 and Table 2 get the
columns ``Vanish-pct`` and ``Confuse-pct`` (the average over the styles present) when such scores
exist, and the per-scene table names them ``<metric>-pct``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

STYLES = (("anime", "Anime"), ("real", "Real"))
TABLE1_COLUMNS = ("Anime-I", "Anime-T", "Real-I", "Real-T", "Mean-I", "Mean-T")
# Rate kinds -> (Table 1 column, the metric preferred when several of that kind were scored)
RATE_COLUMNS: Mapping[str, tuple[str, str]] = {"V": ("Vanish-pct", "vanishing"), "C": ("Confuse-pct", "confusion")}
# Table 2 labels -> method names (or store keys) of the LoRA-Composer ablation; a parameter everywhere.
DEFAULT_ABLATION: Mapping[str, str] = {
    "CE+CI+LR": "lora-composer",
    "CE+CI": "lora-composer-ce-ci",
    "CE": "lora-composer-ce",
    "none": "lora-composer-none",
}
IMAGE_KEYS = ["run", "method", "scene", "style", "index"]


def image_scores(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per generated image: the mean of its region/concept rows for ``metric``."""
    part = df[df["metric"] == metric]
    if part.empty:
        raise KeyError(
            f"metric '{metric}': not in the scores; expected one of {sorted(df['metric'].unique())}"
        )
    return part.groupby(IMAGE_KEYS, as_index=False)["value"].mean()


def scene_means(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (method, scene): the mean of its image scores."""
    return image_scores(df, metric).groupby(["method", "scene", "style"], as_index=False)["value"].mean()


def _style_table(df: pd.DataFrame, i_metric: str, t_metric: str) -> pd.DataFrame:
    columns = {}
    for kind, metric in (("I", i_metric), ("T", t_metric)):
        per_style = scene_means(df, metric).groupby(["method", "style"])["value"].mean().unstack("style")
        for style, label in STYLES:
            if style in per_style:
                columns[f"{label}-{kind}"] = per_style[style]
        present = [s for s, _ in STYLES if s in per_style]
        columns[f"Mean-{kind}"] = per_style[present].mean(axis=1)
    table = pd.DataFrame(columns)
    return table[[c for c in TABLE1_COLUMNS if c in table]]


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


def _metric_kinds(df: pd.DataFrame) -> dict[str, str]:
    return df.drop_duplicates("metric").set_index("metric")["kind"].to_dict()


def default_rate_metric(df: pd.DataFrame, kind: str) -> str | None:
    """The metric key of a rate kind ('V' or 'C') Table 1 shows: the built-in name if scored, else the
    first key of that kind, else None."""
    kinds = _metric_kinds(df)
    preferred = RATE_COLUMNS[kind][1]
    if kinds.get(preferred) == kind:
        return preferred
    keys = sorted(m for m, k in kinds.items() if k == kind)
    return keys[0] if keys else None


def rate_columns(df: pd.DataFrame, metrics: Mapping[str, str | None]) -> dict[str, pd.Series]:
    """Per method, in percent: each rate kind's metric aggregated like Mean-* (styles present averaged)."""
    columns = {}
    for kind, (label, _) in RATE_COLUMNS.items():
        metric = metrics.get(kind)
        if metric is not None:
            per_style = scene_means(df, metric).groupby(["method", "style"])["value"].mean().unstack("style")
            columns[label] = 100.0 * per_style.mean(axis=1)
    return columns


def table1(
    df: pd.DataFrame,
    i_metric: str | None = None,
    t_metric: str | None = None,
    *,
    v_metric: str | None = None,
    c_metric: str | None = None,
) -> pd.DataFrame:
    """Per method: Anime-I, Anime-T, Real-I, Real-T, Mean-I, Mean-T (absent styles are left out), then
    Vanish-pct and Confuse-pct when vanishing / confusion scores exist (``v_metric`` / ``c_metric`` pick others).
    """
    if i_metric is None or t_metric is None:
        i_default, t_default = default_metric_pair(df)
        i_metric, t_metric = i_metric or i_default, t_metric or t_default
    rates = {"V": v_metric or default_rate_metric(df, "V"), "C": c_metric or default_rate_metric(df, "C")}
    table = _style_table(df, i_metric, t_metric)
    for label, column in rate_columns(df, rates).items():
        table[label] = column
    table.index.name = "method"
    table.attrs.update(i_metric=i_metric, t_metric=t_metric, v_metric=rates["V"], c_metric=rates["C"])
    return table


def table2(
    df: pd.DataFrame,
    variants: Mapping[str, str] | None = None,
    i_metric: str | None = None,
    t_metric: str | None = None,
    *,
    v_metric: str | None = None,
    c_metric: str | None = None,
) -> pd.DataFrame:
    """The ablation table: one row per variant label whose method (name or store key) was scored.

    Columns as Table 1's, rate columns included when those scores exist.
    """
    variants = DEFAULT_ABLATION if variants is None else variants
    full = table1(df, i_metric, t_metric, v_metric=v_metric, c_metric=c_metric)
    names = df.drop_duplicates("method").set_index("method")["method_name"]
    rows = {}
    for label, wanted in variants.items():
        keys = [k for k in full.index if k == wanted or names.get(k) == wanted]
        if keys:
            rows[label] = full.loc[keys[0]]
    table = pd.DataFrame(rows).T.reindex(columns=full.columns)
    table.index.name = "variant"
    table.attrs.update(full.attrs)
    return table


def per_scene(df: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Rows (style, scene, method), one column per metric: the mean over that scene's images.

    Rate metrics (kinds V, C) are shown in percent, in a column named ``<metric>-pct``.
    """
    metrics = metrics or sorted(df["metric"].unique())
    kinds = _metric_kinds(df)
    parts = []
    for m in metrics:
        means = scene_means(df, m).set_index(["style", "scene", "method"])["value"]
        parts.append(100.0 * means.rename(f"{m}-pct") if kinds.get(m) in RATE_COLUMNS else means.rename(m))
    return pd.concat(parts, axis=1).sort_index()
