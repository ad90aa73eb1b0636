"""How far each automatic metric agrees with people, and how far a box judge agrees with another.

**Metric–human agreement** (:func:`metric_rank_agreement`; for the dashboard :func:`metric_human_agreement`).
A user study rates images 1–5 on two criteria: *text alignment* ("how well does the image match the
prompt") and *image alignment* ("how much do the characters look like their reference images"). Each
metric is compared with the criterion it claims to measure: text metrics (kind ``T``: CLIP-T) with text
alignment; image metrics (kind ``I``: CLIP-I, DINO) and the concept rates (kinds ``V``/``C``: vanishing,
confusion) with image alignment.

- An image's rating is the mean over the participants who rated it; its metric value is the mean of its
  score rows (regions, and the background on the whole image), as the tables aggregate it.
- Metrics where lower is better (the rates) are negated first, so a positive coefficient always means
  "the metric ranks images as people do".
- **images**: Kendall's τ-b and Spearman's ρ over the rated images; 95 % interval from a bootstrap that
  resamples images (with replacement).
- **methods**: the same coefficients over the methods' means (metric and rating averaged over each
  method's rated images); 95 % interval from a bootstrap that resamples methods. With few methods this
  interval is wide, and resamples holding fewer than two distinct methods are left out.
- Bootstrap intervals are percentile intervals of ``bootstrap`` resamples (default 1000, fixed seed).
  τ-b and ρ of a resample are computed exactly on the resample (duplicates are ties), through the
  multiplicities of the original items (:func:`kendall_tau_b`, :func:`spearman_rho` take ``weights``).

**Box-judge agreement** (:func:`judge_agreement_by_method`): per method, the share of boxes where the
run's judge and the dataset's judge agreed (the ``judge_agreement`` scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CRITERIA = {"text_alignment": "Text-to-Image", "image_alignment": "Image-to-Image"}
CRITERION_OF_KIND = {"T": "text_alignment", "I": "image_alignment", "V": "image_alignment", "C": "image_alignment"}
IMAGE_KEYS = ["run", "method", "scene", "index"]
LEVELS = ("images", "methods")
AGREEMENT_KIND = "A"
DESCRIPTION = (
    "Rank correlation of each metric with the study's ratings (text metrics with text alignment, image metrics "
    "and the concept rates with image alignment; rates negated so that positive = agrees with people). "
    "images: over rated images (mean rating per image), bootstrap over images; methods: over method means, "
    "bootstrap over methods. Brackets: bootstrap 95 % percentile intervals."
)


# -- the coefficients -----------------------------------------------------------------------------


def _counts(n: int, weights: Sequence[float] | np.ndarray | None) -> np.ndarray:
    c = np.ones((1, n)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    if c.shape[1] != n or (c < 0).any():
        raise ValueError(f"weights: expected {n} non-negative multiplicities per row")
    return c


def kendall_tau_b_many(x: Sequence[float], y: Sequence[float], counts: np.ndarray) -> np.ndarray:
    """τ-b of each row of ``counts`` (``[B, n]`` multiplicities of the n items): see :func:`kendall_tau_b`."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    c = _counts(len(xs), counts)
    sx, sy = np.sign(xs[:, None] - xs[None, :]), np.sign(ys[:, None] - ys[None, :])
    score = ((c @ (sx * sy)) * c).sum(axis=1)
    untied = ((c @ np.abs(sx)) * c).sum(axis=1) * ((c @ np.abs(sy)) * c).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(untied > 0, score / np.sqrt(untied), np.nan)


def kendall_tau_b(x: Sequence[float], y: Sequence[float], weights: Sequence[float] | np.ndarray | None = None
                  ) -> float:
    """Kendall's τ-b of paired values; ``weights[i]`` = how many times item i occurs (a bootstrap resample).

    τ-b = (concordant − discordant) / sqrt((pairs not tied in x) · (pairs not tied in y)), over the pairs
    of distinct occurrences (copies of one item are tied in both). NaN when either variable is constant.
    """
    return float(kendall_tau_b_many(x, y, _counts(len(x), weights))[0])


def _ranks_many(values: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``[B, n]``: average rank (1-based) of each item's value among a resample's occurrences (ties averaged)."""
    less = c @ (values[None, :] < values[:, None]).astype(float).T
    equal = c @ (values[None, :] == values[:, None]).astype(float).T
    return less + (equal + 1.0) / 2.0


def spearman_rho_many(x: Sequence[float], y: Sequence[float], counts: np.ndarray) -> np.ndarray:
    """ρ of each row of ``counts`` (``[B, n]`` multiplicities): see :func:`spearman_rho`."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    c = _counts(len(xs), counts)
    rx, ry = _ranks_many(xs, c), _ranks_many(ys, c)
    total = c.sum(axis=1, keepdims=True)
    dx = rx - (c * rx).sum(axis=1, keepdims=True) / total
    dy = ry - (c * ry).sum(axis=1, keepdims=True) / total
    vx, vy = (c * dx * dx).sum(axis=1), (c * dy * dy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((vx > 0) & (vy > 0), (c * dx * dy).sum(axis=1) / np.sqrt(vx * vy), np.nan)


def spearman_rho(x: Sequence[float], y: Sequence[float], weights: Sequence[float] | np.ndarray | None = None
                 ) -> float:
    """Spearman's ρ: the Pearson correlation of average ranks (ties averaged); ``weights`` as in τ-b."""
    return float(spearman_rho_many(x, y, _counts(len(x), weights))[0])


STATISTICS = {"tau": kendall_tau_b_many, "rho": spearman_rho_many}


def bootstrap_interval(x: Sequence[float], y: Sequence[float], statistic: str, *, bootstrap: int = 1000,
                       seed: int = 0, min_distinct: int = 2) -> tuple[float, float, int]:
    """Percentile 95 % interval of ``statistic`` (``tau`` or ``rho``) over ``bootstrap`` resamples of the items.

    Resamples with fewer than ``min_distinct`` distinct items, or where the statistic is undefined, are
    left out; returns (low, high, resamples used). NaN bounds when fewer than 20 resamples remain.
    """
    n = len(x)
    if n < 2 or bootstrap < 1:
        return float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(bootstrap, n))
    counts = np.zeros((bootstrap, n))
    np.add.at(counts, (np.arange(bootstrap)[:, None], draws), 1.0)
    counts = counts[np.count_nonzero(counts, axis=1) >= min_distinct]
    values = STATISTICS[statistic](x, y, counts) if len(counts) else np.array([])
    values = values[~np.isnan(values)]
    if len(values) < 20:
        return float("nan"), float("nan"), len(values)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high), len(values)


# -- study ratings against scores ------------------------------------------------------------------


def image_ratings(answers: pd.DataFrame) -> pd.DataFrame:
    """One row per rated image (run, method, scene, index): the mean of each criterion and the rating count."""
    if answers.empty:
        return pd.DataFrame(columns=[*IMAGE_KEYS, *CRITERIA, "ratings"])
    grouped = answers.groupby(IMAGE_KEYS, as_index=False)
    means = grouped[list(CRITERIA)].mean()
    means["ratings"] = grouped.size()["size"].to_numpy()
    return means


def image_metric_values(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (image, metric key): the mean of its score rows, with the metric's kind and direction."""
    conventions = scores.attrs.get("conventions", {})
    part = scores[scores["kind"].isin(list(CRITERION_OF_KIND))]
    values = part.groupby([*IMAGE_KEYS, "metric"], as_index=False)["value"].mean()
    kinds = part.drop_duplicates("metric").set_index("metric")["kind"]
    values["kind"] = values["metric"].map(kinds)
    higher = {m: bool(conventions.get(m, {}).get("higher_is_better", kinds[m] not in ("V", "C"))) for m in kinds.index}
    values["higher_is_better"] = values["metric"].map(higher)
    return values


def _row(metric: str, kind: str, criterion: str, level: str, x: np.ndarray, y: np.ndarray, bootstrap: int,
         seed: int) -> dict[str, Any]:
    tau_lo, tau_hi, used = bootstrap_interval(x, y, "tau", bootstrap=bootstrap, seed=seed)
    rho_lo, rho_hi, _ = bootstrap_interval(x, y, "rho", bootstrap=bootstrap, seed=seed)
    return {"metric": metric, "kind": kind, "criterion": CRITERIA[criterion], "level": level, "n": len(x),
            "tau": kendall_tau_b(x, y) if len(x) >= 2 else float("nan"), "tau_low": tau_lo, "tau_high": tau_hi,
            "rho": spearman_rho(x, y) if len(x) >= 2 else float("nan"), "rho_low": rho_lo, "rho_high": rho_hi,
            "resamples": used}


def metric_rank_agreement(scores: pd.DataFrame, answers: pd.DataFrame, *, bootstrap: int = 1000,
                          seed: int = 0) -> pd.DataFrame:
    """Per metric key and level (images, methods): τ-b, ρ and their bootstrap intervals (module docstring).

    ``scores``: :func:`reports.load.load_scores`; ``answers``: one row per answer with ``run``, ``method``,
    ``scene``, ``index`` and the criteria columns (``lcbench.study``'s answers, runs named as in the scores).
    """
    ratings = image_ratings(answers)
    values = image_metric_values(scores)
    rows = []
    for metric, part in values.groupby("metric", sort=True):
        kind = str(part["kind"].iloc[0])
        criterion = CRITERION_OF_KIND[kind]
        sign = 1.0 if bool(part["higher_is_better"].iloc[0]) else -1.0
        joined = part.merge(ratings, on=IMAGE_KEYS, how="inner")
        if joined.empty:
            continue
        x, y = sign * joined["value"].to_numpy(float), joined[criterion].to_numpy(float)
        rows.append(_row(str(metric), kind, criterion, "images", x, y, bootstrap, seed))
        per_method = joined.assign(x=x).groupby(["run", "method"])[["x", criterion]].mean()
        rows.append(_row(str(metric), kind, criterion, "methods", per_method["x"].to_numpy(float),
                         per_method[criterion].to_numpy(float), bootstrap, seed))
    columns = ["metric", "kind", "criterion", "level", "n", "tau", "tau_low", "tau_high", "rho", "rho_low",
               "rho_high", "resamples"]
    return pd.DataFrame(rows, columns=columns)


def agreement_text(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`metric_rank_agreement` formatted for people: 'τ [low, high]' and 'ρ [low, high]' cells."""

    def cell(value: float, low: float, high: float) -> str:
        if np.isnan(value):
            return "–"
        bounds = "" if np.isnan(low) else f" [{low:.2f}, {high:.2f}]"
        return f"{value:.2f}{bounds}"

    out = pd.DataFrame({
        "metric": table["metric"], "criterion": table["criterion"], "level": table["level"], "n": table["n"],
        "Kendall tau-b [95% CI]": [cell(*r) for r in table[["tau", "tau_low", "tau_high"]].itertuples(False)],
        "Spearman rho [95% CI]": [cell(*r) for r in table[["rho", "rho_low", "rho_high"]].itertuples(False)],
    })
    return out.set_index(["metric", "criterion", "level"])


def study_answers(answers: Sequence[Mapping[str, Any]], study_runs: Mapping[str, str],
                  score_runs: Mapping[str, str]) -> pd.DataFrame:
    """A study's answers with each ``run`` renamed to the scores' run name of the same folder.

    ``study_runs``: the study's run name -> folder (its ``meta['runs']``); ``score_runs``: the scores' run
    name -> folder (``load_scores(...).attrs['runs']``). Answers about runs that were not scored are dropped.
    """
    frame = pd.DataFrame(list(answers))
    if frame.empty:
        return frame
    by_path = {str(Path(p).resolve()): name for name, p in score_runs.items()}
    names = {study: by_path.get(str(Path(path).resolve())) for study, path in study_runs.items()}
    frame["run"] = frame["run"].map(names)
    return frame.dropna(subset=["run"])


def runs_by_name(run_roots: Sequence[str | Path]) -> dict[str, str]:
    """Study run names -> folder for run folders: a study names a run by its folder name, or ``parent/name``
    when two of its runs share a folder name (``lcbench.study.runs``); both spellings are mapped."""
    out: dict[str, str] = {}
    for root in map(Path, run_roots):
        out.setdefault(root.name, str(root))
        out[f"{root.parent.name}/{root.name}"] = str(root)
    return out


def metric_human_agreement(answers: pd.DataFrame | Sequence[Mapping[str, Any]], run_roots: Sequence[str | Path],
                           *, bootstrap: int = 1000) -> pd.DataFrame:
    """The formatted agreement table of a study's answers against the scores of ``run_roots`` (the dashboard's).

    A one-row frame with a ``note`` says why when there is nothing to show (no answers, no scores yet).
    """
    from reports.load import load_scores

    def note(text: str) -> pd.DataFrame:
        return pd.DataFrame({"note": [text]})

    frame = answers if isinstance(answers, pd.DataFrame) else pd.DataFrame(list(answers))
    if frame.empty:
        return note("No answers yet.")
    scored = [str(r) for r in run_roots if (Path(r) / "scores").is_dir()]
    if not scored:
        return note("The study's runs have no scores yet: run `bench score` on them.")
    scores = load_scores(scored)
    frame = study_answers(frame.to_dict("records"), runs_by_name(run_roots), scores.attrs.get("runs", {}))
    table = metric_rank_agreement(scores, frame, bootstrap=bootstrap) if not frame.empty else pd.DataFrame()
    if table.empty:
        return note("No rated image has scores.")
    out = agreement_text(table)
    out.attrs["note"] = DESCRIPTION
    return out


# -- box-judge agreement ---------------------------------------------------------------------------


def judge_agreement_by_method(scores: pd.DataFrame) -> pd.DataFrame:
    """Per judge-agreement metric key and method: boxes compared, boxes agreeing, agreement in percent."""
    part = scores[scores["kind"] == AGREEMENT_KIND]
    if part.empty:
        return pd.DataFrame(columns=["metric", "method", "boxes", "agree", "agreement %"])
    grouped = part.groupby(["metric", "method"])["value"]
    out = pd.DataFrame({"boxes": grouped.size(), "agree": grouped.sum().astype(int)})
    out["agreement %"] = 100.0 * out["agree"] / out["boxes"]
    return out.reset_index()


# -- the report section -----------------------------------------------------------------------------


def _markdown(frame: pd.DataFrame) -> str:
    flat = frame.reset_index() if frame.index.names != [None] else frame
    header = "| " + " | ".join(str(c) for c in flat.columns) + " |"
    rule = "|" + "|".join("---" for _ in flat.columns) + "|"
    cells = [[f"{v:.1f}" if isinstance(v, float) else str(v) for v in row] for row in flat.itertuples(False)]
    return "\n".join([header, rule, *("| " + " | ".join(r) + " |" for r in cells)])


def agreement_section(scores: pd.DataFrame, study: Mapping[str, Any] | None = None, *,
                      bootstrap: int = 1000) -> list[str]:
    """The report's "Agreement" section (Markdown lines): metric–human agreement when ``study`` is given
    (``{"answers": [...], "runs": {name: folder}}``, as :class:`lcbench.study.StudyDB` holds them) and has
    answers; box-judge agreement per method when the scores hold ``judge_agreement``. Empty when neither."""
    lines: list[str] = []
    if study is not None:
        answers = list(study.get("answers") or [])
        lines += ["### Metric–human agreement (user study)", ""]
        if not answers:
            lines += ["The study has no answers yet.", ""]
        else:
            frame = study_answers(answers, study.get("runs") or {}, scores.attrs.get("runs", {}))
            table = metric_rank_agreement(scores, frame, bootstrap=bootstrap)
            if table.empty:
                lines += ["No rated image of the study is among the scored runs.", ""]
            else:
                rated = frame.groupby(IMAGE_KEYS).ngroups
                lines += [DESCRIPTION, f"{len(frame)} answers on {rated} scored images; {bootstrap} bootstrap "
                          "resamples.", "", _markdown(agreement_text(table)), ""]
    judges = judge_agreement_by_method(scores)
    if not judges.empty:
        conventions = scores.attrs.get("conventions", {})
        lines += ["### Box-judge agreement per method", ""]
        for metric, part in judges.groupby("metric"):
            conv = conventions.get(metric, {})
            lines += [f"`{metric}`: {conv.get('pairing', '')}", "",
                      _markdown(part.drop(columns="metric").set_index("method")), ""]
    return ["## Agreement", "", *lines] if lines else []
