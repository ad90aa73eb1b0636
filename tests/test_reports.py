"""Reports: every table against a hand aggregation of a synthetic scores file; intervals, references,
normalization, marks, the calibration check, the upstream aggregation; report folder; boxes and grids."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageColor
from test_metrics_fixtures import FolderReferences, make_run

from bench.spec import Region, Scene
from bench.store import ItemKey, RunStore, atomic_write_json
from metrics.plugin import builtin_metrics
from metrics.scoring import score_run
from reports import calibration_check, image_grid, load_scores, per_scene, table1, table2, write_report
from reports.boxes import BOX_COLOURS, draw_boxes, label_positions, zoomed
from reports.format import display_frame, to_csv_frame, to_latex, to_markdown
from reports.grids import LABEL_H, LABEL_W
from reports.render import conventions_table

Z = 1.959964
# method -> scene -> seed index -> region values, for I and T; style per scene
STYLE = {"a1": "anime", "r1": "real", "r2": "real"}
VALUES = {
    "clip_i": {
        "lora-composer": {"a1": [[0.8, 0.6], [0.7, 0.5]], "r1": [[0.9, 0.1, 0.5]], "r2": [[0.4], [0.2], [0.3]]},  # noqa: E501
        "lc-nolr": {"a1": [[0.5, 0.5]], "r1": [[0.3, 0.3, 0.6]], "r2": [[0.1]]},
    },
    "clip_t": {
        "lora-composer": {"a1": [[0.3, 0.2], [0.1, 0.2]], "r1": [[0.25, 0.35, 0.3]], "r2": [[0.2], [0.4], [0.3]]},  # noqa: E501
        "lc-nolr": {"a1": [[0.2, 0.2]], "r1": [[0.1, 0.2, 0.3]], "r2": [[0.5]]},
    },
}
NAMES = {"lora-composer": "lora-composer", "lc-nolr": "lora-composer@1a2b3c4d"}
# 0/1 rows of the box-classifier metrics (kinds V and C), same layout
RATES = {
    "vanishing": {
        "lora-composer": {"a1": [[1, 0], [0, 0]], "r1": [[1, 1, 0]], "r2": [[0], [1], [1]]},
        "lc-nolr": {"a1": [[1, 1]], "r1": [[0, 0, 1]], "r2": [[1]]},
    },
    "confusion": {
        "lora-composer": {"a1": [[0, 0], [0, 1]], "r1": [[0, 0, 0]], "r2": [[1], [0], [0]]},
        "lc-nolr": {"a1": [[0, 1]], "r1": [[1, 1, 0]], "r2": [[0]]},
    },
}
# calibration references: the same scenes, two seeds, one value per region (kept simple to compute by hand)
REFS = {"ref-oracle": 0.9, "ref-swapped": 0.6, "ref-floor-base": 0.3, "ref-floor-blank": 0.2, "ref-noise": 0.1}
REF_KIND = {"ref-oracle": "oracle", "ref-swapped": "probe", "ref-floor-base": "floor", "ref-floor-blank": "floor",
            "ref-noise": "probe"}  # fmt: skip
REGIONS = {"a1": 2, "r1": 3, "r2": 1}


def _ref_values(level: float) -> dict[str, list[list[float]]]:
    """Two seeds per scene; seed 1 is 0.01 higher (a tiny, known seed spread)."""
    return {s: [[level] * n, [level + 0.01] * n] for s, n in REGIONS.items()}


def _manifest(run: Path, methods: dict) -> None:
    """A manifest with the fields the store checks, for hand-made runs."""
    RunStore(run).write_manifest({
        "format": "lcbench-run/1", "dataset": {"name": "syn", "path": "/nonexistent.yaml", "spec_hash": "0" * 16},
        "scenes": list(STYLE), "seeds": 3, "seed_scheme": "paper",
        "methods": {k: {"params": {}, "description": "", "reference": None, **v} for k, v in methods.items()}})


def _complete_manifest(run: Path) -> None:
    """Add the fields the store checks to a manifest written by an older fixture (kept when present)."""
    path = run / "manifest.json"
    data = json.loads(path.read_text())
    data.setdefault("format", "lcbench-run/1")
    data.setdefault("seed_scheme", "paper")
    data["dataset"].setdefault("spec_hash", "0" * 16)
    atomic_write_json(path, data)


def _write_scores(run: Path, values: dict, kinds: dict[str, str], model: str = "m") -> None:
    for metric, by_method in values.items():
        atomic_write_json(
            run / "scores" / metric / "conventions.json",
            {"metric": metric, "kind": kinds[metric], "model": model, "weights": "w", "scale": 1.0,
             "crop_mode": "pad_square", "prefix": "", "pairing": "all_pairs", "clip0": False,
             "preprocess": "p", "text": None},
        )  # fmt: skip
        for method, scenes in by_method.items():
            for scene, seeds in scenes.items():
                for index, regions in enumerate(seeds):
                    rows = [{"concept": f"c{j}", "region": j, "value": v} for j, v in enumerate(regions)]
                    atomic_write_json(
                        run / "scores" / metric / f"items/{method}/{scene}/{index:03d}.json",
                        {"method": method, "scene": scene, "index": index, "seed": index,
                         "style": STYLE[scene], "rows": rows},
                    )  # fmt: skip


def _synthetic_run(root: Path, rates: bool = False, refs: bool = False, name: str = "synthetic",
                   random_method: str | None = None, model: str = "m") -> Path:
    run = root / name
    methods = {k: {"name": NAMES[k]} for k in NAMES}
    if refs:
        methods.update({k: {"name": k, "reference": REF_KIND[k]} for k in REFS})
    _manifest(run, methods)
    values = {m: dict(by_method) for m, by_method in VALUES.items()}
    if refs:
        for metric in values:
            values[metric].update({k: _ref_values(v) for k, v in REFS.items()})
    _write_scores(run, values, {"clip_i": "I", "clip_t": "T"}, model)
    if rates:
        _write_scores(run, RATES, {"vanishing": "V", "confusion": "C"})
    if random_method:  # records of one method list a random-weight model
        store = RunStore(run)
        for scene, seeds in VALUES["clip_i"][random_method].items():
            for index in range(len(seeds)):
                models = [{"kind": "pipeline", "ref": "builtin:random-sd", "random_weights": True}]
                store.write_item(ItemKey(random_method, scene, index), index, Image.new("RGB", (8, 8)),
                                 {"status": "ok", "models": models})
    return run


def _hand(metric: str, method: str) -> dict[str, float]:
    scenes = {**VALUES, **RATES}[metric][method]
    scene_mean = {s: np.mean([np.mean(regions) for regions in seeds]) for s, seeds in scenes.items()}
    anime = np.mean([v for s, v in scene_mean.items() if STYLE[s] == "anime"])
    real = np.mean([v for s, v in scene_mean.items() if STYLE[s] == "real"])
    return {"anime": anime, "real": real, "mean": (anime + real) / 2}


def _hand_ci(metric: str, method: str, scenes: list[str]) -> float:
    """1.96 * sqrt(sum var_s / n_s) / S over the scenes, image scores per scene (ddof=1)."""
    images = {s: [float(np.mean(r)) for r in VALUES[metric][method][s]] for s in scenes}
    if any(len(v) < 2 for v in images.values()):
        return float("nan")
    return Z * (sum(statistics.variance(v) / len(v) for v in images.values())) ** 0.5 / len(scenes)


def test_table1_equals_hand_aggregation(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path)])
    n_rows = sum(len(r) for m in VALUES.values() for s in m.values() for seeds in s.values() for r in seeds)
    assert len(df) == n_rows
    assert set(df["pairing"]) == {"all_pairs"} and set(df["method_name"]) == set(NAMES.values())
    table = table1(df)
    assert list(table.mean.columns) == ["Anime-I", "Anime-T", "Real-I", "Real-T", "Mean-I", "Mean-T"]
    for method in NAMES:
        i, t = _hand("clip_i", method), _hand("clip_t", method)
        expected = [i["anime"], t["anime"], i["real"], t["real"], i["mean"], t["mean"]]
        assert table.mean.loc[method].tolist() == pytest.approx(expected, abs=1e-12)
    # the real column is a mean of scene means, not a pooled mean over images
    pooled = np.mean([np.mean(r) for s in ("r1", "r2") for r in VALUES["clip_i"]["lora-composer"][s]])
    assert table.mean.loc["lora-composer", "Real-I"] != pytest.approx(pooled)
    # n: images; the interval over images, scenes as strata
    assert table.n.loc["lora-composer"] == 6 and table.n.loc["lc-nolr"] == 3
    assert table.ci95.loc["lora-composer", "Anime-I"] == pytest.approx(_hand_ci("clip_i", "lora-composer", ["a1"]))
    # r1 has a single image: the interval of a style holding it is undefined, and so is Mean's
    assert np.isnan(table.ci95.loc["lora-composer", "Real-I"]) and np.isnan(table.ci95.loc["lora-composer", "Mean-I"])
    shown = display_frame(table)
    assert shown.loc["lora-composer", "Anime-I ↑"] == (
        f"{_hand('clip_i', 'lora-composer')['anime']:.3f} ± {_hand_ci('clip_i', 'lora-composer', ['a1']):.3f}")
    assert shown.loc["lora-composer", "Real-I ↑"] == f"{_hand('clip_i', 'lora-composer')['real']:.3f}"
    assert "type" not in shown and "notes" not in shown  # no references, no random weights: no such columns


def test_interval_matches_hand_stratified_formula(tmp_path: Path) -> None:
    values = {"m": {"a1": [[0.1, 0.3], [0.5, 0.5], [0.2, 0.2]], "r1": [[0.4, 0.4, 0.4], [0.9, 0.6, 0.3]],
                    "r2": [[0.3], [0.7]]}}  # fmt: skip
    run = tmp_path / "ci"
    _manifest(run, {"m": {"name": "m"}})
    _write_scores(run, {"clip_i": values, "clip_t": values}, {"clip_i": "I", "clip_t": "T"})
    table = table1(load_scores([run]))
    images = {s: [float(np.mean(r)) for r in seeds] for s, seeds in values["m"].items()}
    se2 = {s: statistics.variance(v) / len(v) for s, v in images.items()}
    real_half = Z * (se2["r1"] + se2["r2"]) ** 0.5 / 2
    anime_half = Z * se2["a1"] ** 0.5
    assert table.ci95.loc["m", "Real-I"] == pytest.approx(real_half)
    assert table.ci95.loc["m", "Anime-I"] == pytest.approx(anime_half)
    # Mean: the two style means as independent estimates
    assert table.ci95.loc["m", "Mean-I"] == pytest.approx(Z * ((real_half / Z) ** 2 + (anime_half / Z) ** 2) ** 0.5 / 2)
    assert table.n.loc["m"] == 7


def test_one_style_shows_no_mean_columns(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path)])
    real = df[df["style"] == "real"].copy()
    real.attrs = df.attrs
    table = table1(real)
    assert list(table.mean.columns) == ["Real-I", "Real-T"]  # Real-* is not repeated as Mean-*
    assert table.mean.loc["lc-nolr", "Real-I"] == pytest.approx(_hand("clip_i", "lc-nolr")["real"])


def test_table2_maps_variants_by_method_name_or_key(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path)])
    table = table2(df, {"CE+CI+LR": "lora-composer", "CE+CI": "lora-composer@1a2b3c4d", "none": "absent"})
    assert list(table.mean.index) == ["CE+CI+LR", "CE+CI"]
    assert table.mean.loc["CE+CI", "Mean-I"] == pytest.approx(_hand("clip_i", "lc-nolr")["mean"])
    default = table2(df)  # the default mapping finds the full method by its registered name
    assert list(default.mean.index) == ["CE+CI+LR"]


def test_rate_columns_in_percent_with_fixed_decimals(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path, rates=True)])
    table = table1(df)
    assert list(table.mean.columns) == ["Anime-I", "Anime-T", "Real-I", "Real-T", "Mean-I", "Mean-T", "Vanish-pct",
                                        "Confuse-pct"]  # fmt: skip
    assert table.attrs["v_metric"] == "vanishing" and table.attrs["c_metric"] == "confusion"
    for method in NAMES:
        assert table.mean.loc[method, "Vanish-pct"] == pytest.approx(100 * _hand("vanishing", method)["mean"])
        assert table.mean.loc[method, "Confuse-pct"] == pytest.approx(100 * _hand("confusion", method)["mean"])
    # lora-composer vanishing by hand: anime a1 (0.5 + 0) / 2; real (2/3 + 2/3) / 2; mean of the two, in percent
    assert table.mean.loc["lora-composer", "Vanish-pct"] == pytest.approx(100 * (0.25 + 2 / 3) / 2)
    shown = display_frame(table)
    # fixed decimals per metric: 3 for CLIP, 1 for rates (registered MetricSpec.decimals), whatever the value
    assert shown.loc["lc-nolr", "Vanish-pct ↓"] == f"{100 * _hand('vanishing', 'lc-nolr')['mean']:.1f}"
    assert all(len(v.split(" ")[0].split(".")[1]) == 3 for v in shown["Mean-T ↑"])
    ablation = table2(df, {"CE+CI": "lora-composer@1a2b3c4d"})
    assert ablation.mean.loc["CE+CI", "Confuse-pct"] == pytest.approx(100 * _hand("confusion", "lc-nolr")["mean"])
    scenes = per_scene(df)
    assert {"vanishing %", "confusion %", "clip_i"} <= set(scenes.mean.columns)
    assert scenes.mean.loc[("real", "r1", "lc-nolr"), "confusion %"] == pytest.approx(100 * 2 / 3)
    assert "Vanish-pct" not in table1(load_scores([_synthetic_run(tmp_path / "plain")])).mean


def test_best_marks_direction_and_skip_references(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path, rates=True, refs=True)])
    table = table1(df)
    best = table.best()
    i_means = {m: _hand("clip_i", m)["mean"] for m in NAMES}
    assert best["Mean-I"] == [max(i_means, key=i_means.get)]  # the oracle (0.905) is higher, but not a method
    v_means = {m: _hand("vanishing", m)["mean"] for m in NAMES}
    assert best["Vanish-pct"] == [min(v_means, key=v_means.get)]  # lower is better
    md = to_markdown(table)
    assert "Vanish-pct ↓" in md and "*references*" in md
    winner = best["Mean-I"][0]
    assert f"**{display_frame(table).loc[winner, 'Mean-I ↑']}**" in md
    latex = to_latex(table)
    assert r"\textbf{" in latex and latex.count(r"\midrule") == 2 and r"$\uparrow$" in latex and r"$\pm$" in latex


def test_reference_rows_apart_and_normalized_columns(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path, refs=True)])
    table = table1(df)
    assert list(table.mean.index) == ["lc-nolr", "lora-composer", "ref-oracle", "ref-swapped", "ref-floor-base",
                                      "ref-floor-blank", "ref-noise"]  # fmt: skip
    shown = display_frame(table)
    assert shown.loc["ref-oracle", "type"] == "reference (oracle)" and shown.loc["lc-nolr", "type"] == "method"
    # references: per scene 0.9 (seed 0) and 0.91 (seed 1): every style mean is 0.905
    assert table.mean.loc["ref-oracle", "Mean-I"] == pytest.approx(0.905)
    oracle, floor = 0.905, 0.305  # ref-floor-base is the floor when scored
    for method in NAMES:
        assert table.mean.loc[method, "I-norm"] == pytest.approx((_hand("clip_i", method)["mean"] - floor)
                                                                 / (oracle - floor))
    assert table.mean.loc["ref-oracle", "I-norm"] == pytest.approx(1.0)
    assert table.mean.loc["ref-floor-base", "I-norm"] == pytest.approx(0.0)
    # without ref-floor-base the blank floor (0.205) is used
    no_base = df[df["method"] != "ref-floor-base"].copy()
    no_base.attrs = df.attrs
    other = table1(no_base)
    assert other.mean.loc["lc-nolr", "T-norm"] == pytest.approx((_hand("clip_t", "lc-nolr")["mean"] - 0.205)
                                                                / (0.905 - 0.205))
    assert other.attrs["floor"] == "ref-floor-blank"
    # a lower-is-better metric normalizes the same way: oracle 1, floor 0
    vanish = {m: {s: [[1.0 - v for v in r] for r in seeds] for s, seeds in scenes.items()}
              for m, scenes in {**VALUES["clip_i"], **{k: _ref_values(v) for k, v in REFS.items()}}.items()}
    _write_scores(tmp_path / "synthetic", {"vanishing": vanish}, {"vanishing": "V"})
    lower = table1(load_scores([tmp_path / "synthetic"]))
    assert lower.mean.loc["ref-oracle", "Vanish-norm"] == pytest.approx(1.0)
    assert lower.mean.loc["lc-nolr", "Vanish-norm"] == pytest.approx(table.mean.loc["lc-nolr", "I-norm"])
    # per-scene normalization with the scene's own references
    scenes = per_scene(df)
    r2 = np.mean([0.4, 0.2, 0.3])
    assert scenes.mean.loc[("real", "r2", "lora-composer"), "clip_i norm"] == pytest.approx((r2 - 0.305) / 0.6)


def test_random_weight_rows_and_scorer_columns_are_marked(tmp_path: Path) -> None:
    run = _synthetic_run(tmp_path, random_method="lc-nolr", model="builtin:random-clip")
    df = load_scores([run])
    assert df.attrs["metrics"]["clip_i"].random_model
    table = table1(df)
    assert bool(table.rows.loc["lc-nolr", "random_weights"]) and not bool(table.rows.loc["lora-composer",
                                                                                         "random_weights"])
    shown = display_frame(table)
    assert shown.loc["lc-nolr", "notes"] == "random weights" and shown.loc["lora-composer", "notes"] == ""
    assert "Mean-I ↑ †" in shown.columns
    md = to_markdown(table)
    assert "builtin:random-clip" in md and "random weights" in md
    assert bool(to_csv_frame(table).loc["lc-nolr", "random_weights"])


def test_runs_with_one_method_key_stay_apart_unless_pooled(tmp_path: Path) -> None:
    a = _synthetic_run(tmp_path, name="run_a")
    b = tmp_path / "run_b"
    _manifest(b, {"lc-nolr": {"name": "lc-nolr"}})
    shifted = {m: {"lc-nolr": {s: [[v + 0.1 for v in r] for r in seeds] for s, seeds in by["lc-nolr"].items()}}
               for m, by in VALUES.items()}
    _write_scores(b, shifted, {"clip_i": "I", "clip_t": "T"})
    df = load_scores([a, b])
    apart = table1(df)
    assert sorted(apart.mean.index) == ["lora-composer", "run_a:lc-nolr", "run_b:lc-nolr"]
    assert apart.mean.loc["run_b:lc-nolr", "Mean-I"] == pytest.approx(_hand("clip_i", "lc-nolr")["mean"] + 0.1)
    pooled = table1(df, pool=True)
    assert sorted(pooled.mean.index) == ["lc-nolr", "lora-composer"]
    # pooled: each scene's mean over the images of both runs
    assert pooled.mean.loc["lc-nolr", "Mean-I"] == pytest.approx(_hand("clip_i", "lc-nolr")["mean"] + 0.05)


def test_upstream_aggregation_weighs_every_layout_role(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path)])
    table = table1(df, aggregation="upstream")
    # upstream: mean over images per (scene, role); then the mean over all (scene, role) pairs of the style
    scenes = VALUES["clip_i"]["lora-composer"]
    roles = [np.mean([r[j] for r in scenes[s]]) for s in ("r1", "r2") for j in range(len(scenes[s][0]))]
    assert table.mean.loc["lora-composer", "Real-I"] == pytest.approx(np.mean(roles))
    assert table.mean.loc["lora-composer", "Real-I"] != pytest.approx(_hand("clip_i", "lora-composer")["real"])
    anime = [np.mean([r[j] for r in scenes["a1"]]) for j in range(2)]
    assert table.mean.loc["lora-composer", "Anime-I"] == pytest.approx(np.mean(anime))
    assert "upstream" in to_markdown(table)
    with pytest.raises(ValueError, match="--aggregation"):
        table1(df, aggregation="paper")


def _hand_frame() -> pd.DataFrame:
    """A score frame written out by hand: metric 'sep' separates the references, 'flat' does not.

    Two scenes x three seeds, one row per image; 'sep' per seed: oracle 0.90/0.92/0.88, swapped
    0.60/0.61/0.59, blank 0.20/0.21/0.19, noise 0.10/0.12/0.08 (the same on both scenes).
    """
    levels = {
        "sep": {"ref-oracle": [0.90, 0.92, 0.88], "ref-swapped": [0.60, 0.61, 0.59],
                "ref-floor-blank": [0.20, 0.21, 0.19], "ref-noise": [0.10, 0.12, 0.08],
                "ref-floor-base": [0.3, 0.3, 0.3]},
        "flat": {"ref-oracle": [0.50, 0.55, 0.45], "ref-swapped": [0.49, 0.56, 0.44],
                 "ref-floor-blank": [0.3, 0.3, 0.3], "ref-noise": [0.2, 0.25, 0.15], "ref-floor-base": [0.3, 0.3, 0.3]},
        "lower": {"ref-oracle": [0.0, 0.0, 0.0], "ref-swapped": [0.5, 0.5, 0.5], "ref-floor-blank": [1.0, 1.0, 1.0],
                  "ref-noise": [1.0, 1.0, 1.0], "ref-floor-base": [1.0, 1.0, 1.0]},
    }  # fmt: skip
    rows = []
    for metric, by_method in levels.items():
        for method, seeds in by_method.items():
            for scene in ("s1", "s2"):
                for index, value in enumerate(seeds):
                    rows.append({"run": "r", "dataset": "d", "method": method, "scene": scene, "style": "real",
                                 "index": index, "concept": "c", "region": 0, "metric": metric,
                                 "kind": "V" if metric == "lower" else "I", "value": value})
    return pd.DataFrame(rows)


def test_calibration_check_on_a_hand_built_frame() -> None:
    check = calibration_check(_hand_frame(), k=3.0)
    sep = check.loc["sep"]
    assert bool(sep["passed"]) and sep["reason"] == ""
    assert sep["oracle"] == pytest.approx(0.90) and sep["noise"] == pytest.approx(0.10)
    assert sep["gap_oracle_swapped"] == pytest.approx(0.30) and sep["gap_swapped_blank"] == pytest.approx(0.40)
    std_oracle = statistics.stdev([0.90, 0.92, 0.88])
    std_swapped = statistics.stdev([0.60, 0.61, 0.59])
    assert sep["std_oracle"] == pytest.approx(std_oracle)
    assert sep["need_oracle_swapped"] == pytest.approx(3 * max(std_oracle, std_swapped))
    flat = check.loc["flat"]
    assert not bool(flat["passed"]) and "oracle 0.5 is not above swapped 0.4967" in flat["reason"]
    assert flat["gap_oracle_swapped"] == pytest.approx(0.5 - np.mean([0.49, 0.56, 0.44]))
    lower = check.loc["lower"]  # lower is better (kind V): oracle 0 < swapped 0.5 < blank, noise 1
    assert bool(lower["passed"]) and lower["gap_oracle_swapped"] == pytest.approx(0.5)
    # a larger k makes 'sep' fail on its smallest margin relative to the spread
    strict = calibration_check(_hand_frame(), k=25.0).loc["sep"]
    assert not bool(strict["passed"]) and "seed std" in strict["reason"]
    # a missing reference: not checked, with the reason
    partial = calibration_check(_hand_frame().query("method != 'ref-noise'")).loc["sep"]
    assert pd.isna(partial["passed"]) and "ref-noise" in partial["reason"]


def test_write_report_end_to_end(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    _complete_manifest(run)
    score_run(run, ["clip_i", "clip_t", "clip_i@official"], references=FolderReferences(tmp_path), quiet=True)
    index = write_report([run], tmp_path / "report", formats=("md", "latex", "csv"))
    text = index.read_text()
    assert "random-init seed 0" in text and "first_ref" in text and "A photo depicts" not in text
    assert "| method | n | Anime-I ↑ † | Anime-T ↑ † | Real-I ↑ † | Real-T ↑ † | Mean-I ↑ † | Mean-T ↑ † |" in text
    assert "os.listdir" in text  # clip_i@official's description says how its reference order differs upstream
    assert "## Calibration" in text and "not checked: no scores of ref-oracle" in text
    for name in ("tables/table1.csv", "tables/table1.tex", "tables/per_scene.md", "plots/clip_i.png",
                 "plots/clip_i_at_official.png", "grids/run.png"):  # fmt: skip
        assert (index.parent / name).is_file(), name
    csv = (index.parent / "tables/table1.csv").read_text().splitlines()
    assert csv[0].startswith("method,type,random_weights,n,Anime-I,Anime-I ci95,") and len(csv) == 3
    with pytest.raises(ValueError, match="--format"):
        write_report([run], tmp_path / "r2", formats=("html",))
    with pytest.raises(ValueError, match="--aggregation"):
        write_report([run], tmp_path / "r3", aggregation="mean")


def test_report_drops_metrics_that_fail_calibration(tmp_path: Path) -> None:
    run = _synthetic_run(tmp_path, refs=True)
    # clip_t: make the references indistinguishable (all at 0.5 with the same spread)
    flat = {k: _ref_values(0.5) for k in REFS}
    _write_scores(run, {"clip_t": {**VALUES["clip_t"], **flat}}, {"clip_t": "T"})
    text = write_report([run], tmp_path / "report").read_text()
    calibration = text[text.index("## Calibration"):text.index("## Table 1")]
    assert "| clip_i | pass |" in calibration and "| clip_t | FAIL |" in calibration
    table_1 = text[text.index("## Table 1"):text.index("## All metrics")]
    assert "Mean-I ↑" in table_1 and "Mean-T" not in table_1
    assert "`clip_t` left out: fails the calibration check" in table_1 and "oracle 0.505 is not above" in table_1
    kept = write_report([run], tmp_path / "kept", show_uncalibrated=True).read_text()
    table_1 = kept[kept.index("## Table 1"):kept.index("## All metrics")]
    assert "Mean-T ↑ ✗" in table_1 and "fails the calibration check on this dataset" in table_1


def test_conventions_table_says_direction_scorer_and_upstream_order() -> None:
    specs = {m.name: m for m in builtin_metrics()}
    assert "os.listdir" in specs["clip_i@official"].description
    df = pd.DataFrame({"metric": ["clip_i@official", "vanishing"], "kind": ["I", "V"]})
    from reports.info import metric_info

    infos = {m: metric_info(m, {"metric": m, "kind": k, "model": "builtin:random-clip" if k == "I" else "x"})
             for m, k in zip(df["metric"], df["kind"], strict=True)}
    table = conventions_table({m: {"model": infos[m].model} for m in infos}, infos)
    assert table.loc["vanishing", "direction"].startswith("↓")
    assert table.loc["vanishing", "shown as"].startswith("percent")
    assert table.loc["clip_i@official", "scorer"] == "builtin:random-clip (random weights)"
    assert "os.listdir" in table.loc["clip_i@official", "description"]


def _scene(boxes: list[list[float]], names: list[str], size: int = 64) -> Scene:
    regions = tuple(Region(concept=n, box=tuple(b), prompt=n) for n, b in zip(names, boxes, strict=True))
    return Scene(id="s", prompt="p", width=size, height=size, regions=regions)


def test_draw_boxes_keeps_box_insides_and_labels_outside() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    scene = _scene([[0.0, 0.25, 0.5, 0.9], [0.5, 0.25, 1.0, 0.9]], ["amber", "cobalt"])
    zoom, width = 4, 2
    out = draw_boxes(image, scene, zoom=zoom, width=width)
    assert out.size == (256, 256)  # labels fit above the boxes: no legend strip
    big = np.asarray(zoomed(image, zoom))
    drawn = np.asarray(out)
    for x0, y0, x1, y1 in ((0, 64, 128, 230), (128, 64, 256, 230)):
        inside = (slice(y0 + width, y1 - width), slice(x0 + width, x1 - width))
        assert np.array_equal(drawn[inside], big[inside])  # nothing covers a box's inside
    assert not np.array_equal(drawn[:64], big[:64])  # the labels went above the boxes
    # nearest neighbour: every 4x4 block is one source pixel
    assert np.array_equal(big[::4, ::4], np.asarray(image)) and np.array_equal(big[3::4, 3::4], np.asarray(image))
    # the second box's outline keeps its colour
    assert tuple(drawn[100, 128]) == ImageColor.getrgb(BOX_COLOURS[1])


def test_draw_boxes_uses_a_legend_when_labels_do_not_fit() -> None:
    image = Image.new("RGB", (64, 64), "gray")
    scene = _scene([[0.0, 0.0, 1.0, 1.0]], ["a-very-long-concept-name"])
    out = draw_boxes(image, scene, zoom=2)
    assert out.width == 128 and out.height > 128  # a legend strip under the image
    assert np.array_equal(np.asarray(out)[4:124, 4:124], np.asarray(zoomed(image, 2))[4:124, 4:124])
    assert label_positions([(0, 0, 128, 128)], [(30, 10)], (128, 128), 1) is None
    assert label_positions([(0, 20, 50, 60)], [(30, 10)], (128, 128), 1) == [(0, 7, 31, 18)]


def test_image_grid_draws_boxes_without_smoothing(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    _complete_manifest(run)
    grid = image_grid(run, scenes=["real1", "anime1"], methods=["m1", "m2"], cell_height=64)
    cell_w = 128  # real1 is 128 x 64, the widest scene
    assert grid.size == (LABEL_W + 2 * cell_w, LABEL_H + 2 * 64)
    # real1's first box [0, 0, 0.5, 1] starts at the tile's top-left corner, drawn in the first colour
    assert grid.getpixel((LABEL_W, LABEL_H + 10)) == ImageColor.getrgb(BOX_COLOURS[0])
    # the second box [0.5, 0.25, 1, 1] starts at x = 64, y = 16 in the second method's tile
    assert grid.getpixel((LABEL_W + cell_w + 64, LABEL_H + 30)) == ImageColor.getrgb(BOX_COLOURS[1])
    # anime1 is 64 x 64 in a 64-pixel cell: the tile's pixels are the image's own (no smoothing)
    record = next(r for r in RunStore(run).records() if r.key == ItemKey("m1", "anime1", 0))
    with Image.open(record.image) as original:
        source = np.asarray(original.convert("RGB"))
    tile = np.asarray(grid)[LABEL_H + 64 + 20 : LABEL_H + 64 + 40, LABEL_W + 20 : LABEL_W + 30]
    assert np.array_equal(tile, source[20:40, 20:30])


def test_load_scores_needs_scores(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    _complete_manifest(run)
    with pytest.raises(FileNotFoundError, match="bench score"):
        load_scores([run])
    assert json.loads((run / "manifest.json").read_text())["dataset"]["name"] == "mini"
