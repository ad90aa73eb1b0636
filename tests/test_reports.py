"""Reports: Table 1/2 against a hand aggregation of a synthetic scores file; report folder; image grids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageColor
from test_metrics_fixtures import FolderReferences, make_run

from bench.store import RunStore, atomic_write_json
from metrics.scoring import score_run
from reports import image_grid, load_scores, per_scene, table1, table2, write_report
from reports.boxes import BOX_COLOURS
from reports.grids import LABEL_H

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


def _write_scores(run: Path, values: dict, kinds: dict[str, str]) -> None:
    for metric, by_method in values.items():
        atomic_write_json(
            run / "scores" / metric / "conventions.json",
            {"metric": metric, "kind": kinds[metric], "model": "m", "weights": "w", "scale": 1.0,
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


def _synthetic_run(root: Path, rates: bool = False) -> Path:
    run = root / "synthetic"
    store = RunStore(run)
    store.write_manifest(
        {"dataset": {"name": "syn", "path": "/nonexistent.yaml"},
         "methods": {k: {"name": NAMES[k], "params": {}, "description": ""} for k in NAMES}}
    )  # fmt: skip
    _write_scores(run, VALUES, {"clip_i": "I", "clip_t": "T"})
    if rates:
        _write_scores(run, RATES, {"vanishing": "V", "confusion": "C"})
    return run


def _hand(metric: str, method: str) -> dict[str, float]:
    scenes = {**VALUES, **RATES}[metric][method]
    scene_mean = {s: np.mean([np.mean(regions) for regions in seeds]) for s, seeds in scenes.items()}
    anime = np.mean([v for s, v in scene_mean.items() if STYLE[s] == "anime"])
    real = np.mean([v for s, v in scene_mean.items() if STYLE[s] == "real"])
    return {"anime": anime, "real": real, "mean": (anime + real) / 2}


def test_table1_equals_hand_aggregation(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path)])
    n_rows = sum(len(r) for m in VALUES.values() for s in m.values() for seeds in s.values() for r in seeds)
    assert len(df) == n_rows
    assert set(df["pairing"]) == {"all_pairs"} and set(df["method_name"]) == set(NAMES.values())
    table = table1(df)
    assert list(table.columns) == ["Anime-I", "Anime-T", "Real-I", "Real-T", "Mean-I", "Mean-T"]
    for method in NAMES:
        i, t = _hand("clip_i", method), _hand("clip_t", method)
        expected = [i["anime"], t["anime"], i["real"], t["real"], i["mean"], t["mean"]]
        assert table.loc[method].tolist() == pytest.approx(expected, abs=1e-12)
    # the real column is a mean of scene means, not a pooled mean over images
    pooled = np.mean([np.mean(r) for s in ("r1", "r2") for r in VALUES["clip_i"]["lora-composer"][s]])
    assert table.loc["lora-composer", "Real-I"] != pytest.approx(pooled)


def test_table2_maps_variants_by_method_name_or_key(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path)])
    table = table2(df, {"CE+CI+LR": "lora-composer", "CE+CI": "lora-composer@1a2b3c4d", "none": "absent"})
    assert list(table.index) == ["CE+CI+LR", "CE+CI"]
    assert table.loc["CE+CI", "Mean-I"] == pytest.approx(_hand("clip_i", "lc-nolr")["mean"])
    default = table2(df)  # the default mapping finds the full method by its registered name
    assert list(default.index) == ["CE+CI+LR"]


def test_rate_columns_in_table1_table2_and_per_scene(tmp_path: Path) -> None:
    df = load_scores([_synthetic_run(tmp_path, rates=True)])
    table = table1(df)
    assert list(table.columns) == ["Anime-I", "Anime-T", "Real-I", "Real-T", "Mean-I", "Mean-T", "Vanish-pct",
                                   "Confuse-pct"]  # fmt: skip
    assert table.attrs["v_metric"] == "vanishing" and table.attrs["c_metric"] == "confusion"
    for method in NAMES:
        assert table.loc[method, "Vanish-pct"] == pytest.approx(100 * _hand("vanishing", method)["mean"])
        assert table.loc[method, "Confuse-pct"] == pytest.approx(100 * _hand("confusion", method)["mean"])
        assert table.loc[method, "Mean-I"] == pytest.approx(_hand("clip_i", method)["mean"])
    # lora-composer vanishing by hand: anime a1 (0.5 + 0) / 2; real (2/3 + 2/3) / 2; mean of the two, in percent
    assert table.loc["lora-composer", "Vanish-pct"] == pytest.approx(100 * (0.25 + 2 / 3) / 2)
    ablation = table2(df, {"CE+CI": "lora-composer@1a2b3c4d"})
    assert ablation.loc["CE+CI", "Confuse-pct"] == pytest.approx(100 * _hand("confusion", "lc-nolr")["mean"])
    scenes = per_scene(df)
    assert {"vanishing-pct", "confusion-pct", "clip_i"} <= set(scenes.columns) and "vanishing" not in scenes
    assert scenes.loc[("real", "r1", "lc-nolr"), "confusion-pct"] == pytest.approx(100 * 2 / 3)
    # scores without rate metrics keep the old table (checked exactly in test_table1_equals_hand_aggregation)
    assert "Vanish-pct" not in table1(load_scores([_synthetic_run(tmp_path / "plain")]))


def test_per_scene_breakdown(tmp_path: Path) -> None:
    table = per_scene(load_scores([_synthetic_run(tmp_path)]))
    assert table.loc[("real", "r2", "lora-composer"), "clip_i"] == pytest.approx(0.3)
    assert table.loc[("anime", "a1", "lora-composer"), "clip_t"] == pytest.approx(np.mean([0.25, 0.15]))


def test_write_report_end_to_end(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    score_run(run, ["clip_i", "clip_t", "clip_i@official"], references=FolderReferences(tmp_path), quiet=True)
    index = write_report([run], tmp_path / "report", formats=("md", "latex", "csv"))
    text = index.read_text()
    assert "random-init seed 0" in text and "first_ref" in text and "A photo depicts" not in text
    assert "| method | Anime-I | Anime-T | Real-I | Real-T | Mean-I | Mean-T |" in text
    for name in ("tables/table1.csv", "tables/table1.tex", "tables/per_scene.md", "plots/clip_i.png",
                 "plots/clip_i_at_official.png", "grids/run.png"):  # fmt: skip
        assert (index.parent / name).is_file(), name
    csv = (index.parent / "tables/table1.csv").read_text().splitlines()
    assert csv[0] == "method,Anime-I,Anime-T,Real-I,Real-T,Mean-I,Mean-T" and len(csv) == 3
    assert "Vanish-pct" not in text
    with pytest.raises(ValueError, match="--format"):
        write_report([run], tmp_path / "r2", formats=("html",))

    # box-classifier scores (written by hand: 0/1 per region) add two percent columns and their note
    for metric, kind, value in (("vanishing", "V", 1.0), ("confusion", "C", 0.0)):
        atomic_write_json(run / "scores" / metric / "conventions.json",
                          {"metric": metric, "kind": kind, "model": "builtin:toy-classifier", "weights": "sha256:x"})
        for path in (run / "scores" / "clip_i" / "items").glob("*/*/*.json"):
            item = json.loads(path.read_text())
            item["rows"] = [dict(r, value=value) for r in item["rows"] if r["region"] >= 0]
            atomic_write_json(run / "scores" / metric / path.relative_to(run / "scores" / "clip_i"), item)
    text = write_report([run], tmp_path / "report3", formats=("md", "latex")).read_text()
    assert "| method | Anime-I | Anime-T | Real-I | Real-T | Mean-I | Mean-T | Vanish-pct | Confuse-pct |" in text
    assert "| m1 |" in text and "| 100.0000 | 0.0000 |" in text
    assert "`Vanish-pct` from `vanishing`" in text and "builtin:toy-classifier" in text


def test_image_grid_draws_boxes(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    grid = image_grid(run, scenes=["real1", "anime1"], methods=["m1", "m2"], cell_height=64)
    label_w, cell_w = 96, 128  # real1 is 128 x 64, the widest scene
    assert grid.size == (label_w + 2 * cell_w, LABEL_H + 2 * 64)
    # real1's first box [0, 0, 0.5, 1] starts at the tile's top-left corner, drawn in the first colour
    assert grid.getpixel((label_w, LABEL_H + 10)) == ImageColor.getrgb(BOX_COLOURS[0])
    # the second box [0.5, 0.25, 1, 1] starts at x = 64, y = 16 in the second method's tile
    assert grid.getpixel((label_w + cell_w + 64, LABEL_H + 30)) == ImageColor.getrgb(BOX_COLOURS[1])


def test_load_scores_needs_scores(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="bench score"):
        load_scores([run])
    assert json.loads((run / "manifest.json").read_text())["dataset"]["name"] == "mini"
