"""Diagnosing lost boxes: scenes beside their regions alone and moved; boxes rounded on coarse grids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_measurement_scripts import _script

from bench.catalog import load_dataset
from bench.spec import load_spec
from lcbench.cli import main as bench_main

TOY_ASSETS = Path(__file__).resolve().parents[1] / "datasets" / "toy"


def test_each_scene_gets_its_regions_alone_and_its_concepts_moved_with_its_own_seeds(tmp_path: Path) -> None:
    diagnosis = _script("diagnose_composition")
    toy = load_dataset("toy")
    document, variants = diagnosis.composition_spec(toy, "default")
    path = tmp_path / "composition.json"
    path.write_text(json.dumps(document))
    spec = load_spec(path)  # a valid spec file, as `bench run` reads it
    expected = []
    for scene_id in toy.benchmarks["default"].scenes:
        n = len(toy.scenes[scene_id].regions)
        alone = [f"{scene_id}+alone{kind}-{i}" for i in range(n) for kind in ("", "-scene-prompt")]
        expected += [f"{scene_id}+composed", *alone, f"{scene_id}+moved"]
    assert list(spec.scenes) == expected == list(variants)
    assert spec.benchmarks["default"].seeds == 4 and spec.benchmarks["default"].seed_scheme == "paper"
    assert Path(spec.asset_root or "") == TOY_ASSETS.resolve()
    original = toy.scenes["ruby_jade"]
    composed, alone, in_scene, moved = (spec.scenes[f"ruby_jade+{v}"]
                                        for v in ("composed", "alone-1", "alone-scene-prompt-1", "moved"))
    assert (composed.prompt, composed.regions, composed.seed) == (original.prompt, original.regions, original.seed)
    assert alone.prompt == "a square on a white background" and alone.seed == original.seed
    assert alone.regions == (original.regions[1],)
    assert in_scene.regions == alone.regions and in_scene.prompt == original.prompt
    assert variants["ruby_jade+alone-scene-prompt-1"].kind == "alone_scene_prompt"
    assert [r.concept for r in moved.regions] == ["jade", "ruby"] and moved.prompt == original.prompt
    assert [r.box for r in moved.regions] == [r.box for r in original.regions]
    assert moved.regions[0].prompt == original.regions[1].prompt
    assert variants["ruby_jade+moved"].homes == (1, 0) and variants["ruby_jade+alone-1"].homes == (1,)
    other, _ = diagnosis.composition_spec(toy, "smoke", seeds=2, assets=tmp_path)
    assert other["asset_root"] == str(tmp_path) and other["benchmarks"][0]["seeds"] == 2
    assert [s["id"] for s in other["scenes"]] == [
        "ruby_jade+composed", "ruby_jade+alone-0", "ruby_jade+alone-scene-prompt-0", "ruby_jade+alone-1",
        "ruby_jade+alone-scene-prompt-1", "ruby_jade+moved"]
    with pytest.raises(ValueError, match="'nope' is not a benchmark of .*toy.yaml; expected one of"):
        diagnosis.composition_spec(toy, "nope")


def test_the_table_reads_each_generated_region_as_the_original_region_it_carries() -> None:
    diagnosis = _script("diagnose_composition")
    Variant = diagnosis.Variant
    variants = {"s+composed": Variant("s", "composed", (0, 1)), "s+alone-0": Variant("s", "alone", (0,)),
                "s+alone-1": Variant("s", "alone", (1,)), "s+moved": Variant("s", "moved", (1, 0)),
                "s+in-1": Variant("s", "alone_scene_prompt", (1,))}
    rows = [  # (scene, index, region, concept, value): b is lost composed in both seeds and moved, drawn alone once
        ("s+composed", 0, 0, "a", 0.0), ("s+composed", 0, 1, "b", 1.0),
        ("s+composed", 1, 0, "a", 1.0), ("s+composed", 1, 1, "b", 1.0),
        ("s+alone-0", 0, 0, "a", 0.0), ("s+alone-0", 1, 0, "a", 0.0),
        ("s+alone-1", 0, 0, "b", 0.0), ("s+alone-1", 1, 0, "b", 1.0),
        ("s+in-1", 0, 0, "b", 1.0), ("s+in-1", 1, 0, "b", 1.0),
        ("s+moved", 0, 0, "b", 1.0), ("s+moved", 0, 1, "a", 0.0),
        ("s+moved", 1, 0, "b", 1.0), ("s+moved", 1, 1, "a", 0.0),
    ]
    scores = pd.DataFrame(
        [{"method": "m", "metric": "vanishing", "scene": s, "index": i, "region": r, "concept": c, "value": v}
         for s, i, r, c, v in rows]
        + [{"method": "other", "metric": "vanishing", "scene": "s+composed", "index": 0, "region": 0,
            "concept": "a", "value": 1.0}])
    table = diagnosis.composition_table(scores, variants, "m", "vanishing")
    assert list(table.columns) == ["seeds", "composed", "alone", "alone_scene_prompt", "moved"]
    assert table.loc[("s", 0, "a")].drop("alone_scene_prompt").tolist() == [2, 0.5, 0.0, 0.0]
    assert np.isnan(table.loc[("s", 0, "a"), "alone_scene_prompt"])  # not generated: no number
    assert table.loc[("s", 1, "b")].tolist() == [2, 1.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="no 'clip_i' scores of method 'm' per region"):
        diagnosis.composition_table(scores, variants, "m", "clip_i")


@pytest.mark.slow
def test_the_composed_variant_is_the_image_the_main_job_makes(tmp_path: Path, capsys) -> None:
    diagnosis = _script("diagnose_composition")
    out = tmp_path / "composition"
    assert diagnosis.main(["--method", "lora-composer", "--out", str(out), "--benchmark", "smoke",
                           "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "ruby_jade" in printed and "mean over boxes:" in printed
    assert len(list((out / "items" / "lora-composer").glob("*/*.png"))) == 6
    plain = tmp_path / "plain"
    assert bench_main(["--quiet", "run", "--methods", "lora-composer", "--dataset", "toy", "--benchmark", "smoke",
                       "--out", str(plain)]) == 0

    def pixels(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path))

    composed = pixels(out / "items" / "lora-composer" / "ruby_jade+composed" / "000.png")
    np.testing.assert_array_equal(composed, pixels(plain / "items" / "lora-composer" / "ruby_jade" / "000.png"))
    alone = pixels(out / "items" / "lora-composer" / "ruby_jade+alone-1" / "000.png")
    assert np.abs(alone.astype(int) - composed.astype(int)).mean() > 1.0  # another scene, another image
    # a killed run resumes: a second call makes nothing new and prints the same table
    assert diagnosis.main(["--method", "lora-composer", "--out", str(out), "--benchmark", "smoke",
                           "--workers", "1"]) == 0
    assert "0 generated, 6 already done" in capsys.readouterr().out


def test_rounded_boxes_give_every_toy_box_cells_on_the_4x4_grid_and_leave_finer_grids_as_upstream() -> None:
    from regions.geometry import build_geometry, empty_boxes

    grids = _script("diagnose_box_grids")
    boxes = [r.box for r in load_dataset("toy").scenes["ruby_jade"].regions]
    upstream_16 = build_geometry(boxes, 16, 16, with_mask=True, device="cpu").grid_boxes
    assert [(e.region, e.grid_hw) for e in empty_boxes(boxes, (16, 16), [4])] == [(0, (4, 4)), (1, (4, 4))]
    with grids.rounded_boxes(4):
        assert empty_boxes(boxes, (16, 16), [4]) == []
        # ruby's box [0.03, 0.25, 0.47, 0.75] on 4x4: rows round(1.0)..round(3.0), columns round(0.12)..round(1.88)
        assert build_geometry(boxes, 4, 4, with_mask=True, device="cpu").grid_boxes == [(1, 3, 0, 2), (1, 3, 2, 4)]
        assert build_geometry(boxes, 16, 16, with_mask=True, device="cpu").grid_boxes == upstream_16
    assert len(empty_boxes(boxes, (16, 16), [4])) == 2  # restored on the way out
