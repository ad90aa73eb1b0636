"""Metric–human agreement: τ-b and ρ against hand computations, the bootstrap, and a synthetic study.

scipy is not installed here, so the coefficients are checked against worked examples (pairs counted by
hand below) and against a textbook pair-by-pair implementation in this file; the synthetic study's
ratings are built to follow one metric (CLIP-T for text alignment, vanishing for image alignment) and
to ignore another (CLIP-I), and the agreement table must tell them apart.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from study_sample import make_sample_runs

from bench.store import RunStore, ScoreStore
from lcbench.cli import main
from lcbench.study import StudyDB, create_study
from reports.agreement import (
    bootstrap_interval,
    judge_agreement_by_method,
    kendall_tau_b,
    metric_human_agreement,
    metric_rank_agreement,
    spearman_rho,
)
from reports.load import load_scores


def textbook_tau_b(x: list[float], y: list[float]) -> float:
    """τ-b by counting every pair: (C - D) / sqrt((n0 - n1)(n0 - n2))."""
    conc = disc = tied_x = tied_y = 0
    pairs = list(itertools.combinations(range(len(x)), 2))
    for i, j in pairs:
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0:
            tied_x += 1
        if dy == 0:
            tied_y += 1
        if dx * dy > 0:
            conc += 1
        elif dx * dy < 0:
            disc += 1
    n0 = len(pairs)
    return (conc - disc) / math.sqrt((n0 - tied_x) * (n0 - tied_y))


def textbook_rho(x: list[float], y: list[float]) -> float:
    """Pearson correlation of average ranks, ranks by counting."""

    def ranks(v: list[float]) -> list[float]:
        return [sum(w < a for w in v) + (sum(w == a for w in v) + 1) / 2 for a in v]

    rx, ry = np.array(ranks(x)), np.array(ranks(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_coefficients_on_worked_examples() -> None:
    # x rises; y = 3 1 2 5 4: discordant pairs (1,2) (1,3) (4,5), the other 7 concordant -> tau = 4/10;
    # rank differences -2 1 1 -1 1 -> rho = 1 - 6 * 8 / (5 * 24) = 0.6
    assert kendall_tau_b([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) == pytest.approx(0.4)
    assert spearman_rho([1, 2, 3, 4, 5], [3, 1, 2, 5, 4]) == pytest.approx(0.6)
    # ties: x = 1 1 2 3, y = 1 2 2 3: 4 concordant, 0 discordant, one pair tied in x, one in y
    # -> tau-b = 4 / sqrt(5 * 5) = 0.8; average ranks (1.5 1.5 3 4) and (1 2.5 2.5 4) -> rho = 3.75 / 4.5
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert spearman_rho([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(3.75 / 4.5)
    assert kendall_tau_b([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3])) and math.isnan(spearman_rho([1, 1, 1], [1, 2, 3]))


def test_weighted_coefficients_equal_the_expanded_resample() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 6, size=9).astype(float)
    y = (x + rng.integers(-2, 3, size=9)).astype(float)
    for _ in range(20):
        counts = rng.integers(0, 4, size=9)
        if np.count_nonzero(counts) < 2:
            continue
        xs, ys = list(np.repeat(x, counts)), list(np.repeat(y, counts))
        assert kendall_tau_b(x, y, counts) == pytest.approx(textbook_tau_b(xs, ys), nan_ok=True)
        assert spearman_rho(x, y, counts) == pytest.approx(textbook_rho(xs, ys), nan_ok=True)


def test_bootstrap_interval_brackets_and_narrows() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    strong = x + 0.3 * rng.normal(size=200)
    none = rng.normal(size=200)
    low, high, used = bootstrap_interval(x, strong, "tau", bootstrap=400, seed=0)
    assert used == 400 and 0.5 < low < kendall_tau_b(x, strong) < high < 0.9
    low, high, _ = bootstrap_interval(x, none, "rho", bootstrap=400, seed=0)
    assert low < 0 < high
    # reproducible with a seed; too few distinct items give no interval
    assert bootstrap_interval(x, strong, "tau", bootstrap=50, seed=3) == bootstrap_interval(
        x, strong, "tau", bootstrap=50, seed=3)
    assert math.isnan(bootstrap_interval([1.0], [2.0], "tau")[0])


# -- a synthetic study ----------------------------------------------------------------------------------


def _value(metric: str, method: str, scene: str, index: int) -> float:
    """Deterministic made-up per-image values; clip_i is unrelated to the others."""
    key = f"{method}|{scene}|{index}"
    u = (hash_unit(key + "a"), hash_unit(key + "b"))
    method_level = {"lora_composer": 0.8, "mix_of_show": 0.5, "paint_by_example": 0.2}[method]
    if metric == "clip_t":
        return round(0.5 * method_level + 0.5 * u[0], 4)
    if metric == "vanishing":
        return round(1.0 - 0.5 * method_level - 0.5 * u[1], 4)  # lower is better
    return round(hash_unit(key + "noise"), 4)  # clip_i: noise


def hash_unit(text: str) -> float:
    import zlib

    return (zlib.crc32(text.encode()) % 10007) / 10007


def _write_scores(run: Path) -> None:
    store = RunStore(run)
    scores = ScoreStore(store.root)
    spec = store.read_spec()
    for metric, kind, higher in (("clip_t", "T", True), ("clip_i", "I", True), ("vanishing", "V", False),
                                 ("judge_agreement", "A", True)):
        scores.write_conventions(metric, {"metric": metric, "kind": kind, "params": {}, "model": "synthetic",
                                          "higher_is_better": higher})
        for record in store.records():
            scene = spec.scenes[record.key.scene]
            value = _value(metric, record.key.method, record.key.scene, record.key.index)
            if metric == "judge_agreement":
                rows = [{"concept": r.concept, "region": i, "value": float((record.key.index + i) % 4 != 0)}
                        for i, r in enumerate(scene.regions)]
            else:
                rows = [{"concept": r.concept, "region": i, "value": value} for i, r in enumerate(scene.regions)]
            scores.write_item(metric, record, scene.style, rows)


def _rating(value: float, jitter: float) -> int:
    return int(min(5, max(1, round(1 + 4 * value + jitter))))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    folder = tmp_path_factory.mktemp("agree")
    runs = make_sample_runs(folder / "runs", seeds=4)
    for run in runs:
        _write_scores(run)
    info = create_study(runs, folder / "study", participants=["ann", "ben", "cy"], seed=1)
    db = StudyDB(info.path)
    rng = np.random.default_rng(0)
    for code in info.participant_codes:
        for q in db.questions(code):
            text = _value("clip_t", q.method, q.scene, q.index)
            image = 1.0 - _value("vanishing", q.method, q.scene, q.index)
            db.submit(code, q.id, _rating(text, rng.normal(0, 0.3)), _rating(image, rng.normal(0, 0.3)))
    return runs, info.path


def test_ratings_built_to_follow_one_metric_and_not_another(synthetic: tuple[list[Path], Path]) -> None:
    runs, study = synthetic
    db = StudyDB(study)
    table = metric_rank_agreement(load_scores(runs), pd.DataFrame(db.answers()), bootstrap=500)
    rows = table.set_index(["metric", "level"])
    assert set(table["metric"]) == {"clip_t", "clip_i", "vanishing"}  # judge_agreement (kind A) is no quality metric
    assert rows.loc[("clip_t", "images"), "criterion"] == "Text-to-Image"
    assert rows.loc[("clip_i", "images"), "criterion"] == rows.loc[("vanishing", "images"), "criterion"] == (
        "Image-to-Image")
    images = len(db.answers()) // 3
    assert rows.loc[("clip_t", "images"), "n"] == images and rows.loc[("clip_t", "methods"), "n"] == 3
    for metric in ("clip_t", "vanishing"):  # followed: strong, interval well above 0 (vanishing negated)
        row = rows.loc[(metric, "images")]
        assert row["tau"] > 0.5 and row["tau_low"] > 0.3 and row["rho"] > 0.6 and row["rho_low"] > 0.4
    noise = rows.loc[("clip_i", "images")]  # not followed: interval around 0
    assert noise["tau_low"] < 0 < noise["tau_high"] and noise["rho_low"] < 0 < noise["rho_high"]
    # methods: the three method means follow the metric exactly
    assert rows.loc[("clip_t", "methods"), "tau"] == pytest.approx(1.0)
    assert rows.loc[("vanishing", "methods"), "rho"] == pytest.approx(1.0)
    # the image-level point estimate is the coefficient of the per-image means, computed here directly
    answers = pd.DataFrame(db.answers()).groupby(["run", "method", "scene", "index"])["text_alignment"].mean()
    values = [_value("clip_t", m, s, i) for _, m, s, i in answers.index]
    assert rows.loc[("clip_t", "images"), "tau"] == pytest.approx(textbook_tau_b(values, list(answers)))


def test_report_and_study_table_show_the_agreement(synthetic: tuple[list[Path], Path], tmp_path: Path) -> None:
    runs, study = synthetic
    db = StudyDB(study)
    roots = list(json.loads(db.meta()["runs"]).values())
    table = metric_human_agreement(pd.DataFrame(db.answers()), roots, bootstrap=200)  # the dashboard's call
    assert list(table.index.names) == ["metric", "criterion", "level"] and len(table) == 6
    assert "bootstrap over images" in table.attrs["note"]
    cell = table.loc[("clip_t", "Text-to-Image", "images"), "Kendall tau-b [95% CI]"]
    assert cell.count("[") == 1 and float(cell.split(" ")[0]) > 0.5
    out = tmp_path / "report"
    assert main(["--quiet", "report", *map(str, runs), "--study", str(study), "--out", str(out)]) == 0
    index = (out / "index.md").read_text()
    assert "## Agreement" in index and "Metric–human agreement" in index and "Kendall tau-b [95% CI]" in index
    assert "Box-judge agreement per method" in index  # the judge_agreement scores, per method


def test_empty_study_and_judge_agreement_by_method(synthetic: tuple[list[Path], Path]) -> None:
    runs, _ = synthetic
    assert metric_human_agreement([], runs).to_dict("list") == {"note": ["No answers yet."]}
    per_method = judge_agreement_by_method(load_scores(runs)).set_index("method")
    # (index + region) % 4 != 0 by construction: count the boxes by hand for one method
    spec = RunStore(runs[0]).read_spec()
    boxes = [(i + r) % 4 != 0 for s in spec.scenes.values() for i in range(4) for r in range(len(s.regions))]
    assert per_method.loc["lora_composer", "boxes"] == len(boxes)
    assert per_method.loc["lora_composer", "agreement %"] == pytest.approx(100 * sum(boxes) / len(boxes))
