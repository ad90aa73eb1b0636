"""The measurement scripts the README quotes read the run's files as the bench writes them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def _write_confusion(run: Path, method: str, rows: list[tuple[str, str, float]]) -> None:
    folder = run / "scores" / "confusion" / "items" / method / "two"
    folder.mkdir(parents=True)
    record = {"rows": [{"concept": c, "predicted": p, "region": i, "value": v} for i, (c, p, v) in enumerate(rows)]}
    (folder / "000.json").write_text(json.dumps(record))


def test_confusion_breakdown_tells_a_neighbours_colour_from_the_own_colour_in_another_shape(tmp_path: Path) -> None:
    breakdown = _script("confusion_breakdown")
    concepts = [{"id": "ruby", "attributes": {"shape": "circle", "colour": "red"}},
                {"id": "jade", "attributes": {"shape": "square", "colour": "green"}}]
    (tmp_path / "spec.json").write_text(json.dumps({"concepts": concepts}))
    _write_confusion(tmp_path, "m", [("ruby", "green dotted circle", 1.0),    # jade's colour leaked into ruby's box
                                     ("jade", "green dotted circle", 1.0),    # jade's colour, ruby's round shape
                                     ("jade", "green dotted square", 0.0),
                                     ("ruby", "none", 0.0)])
    boxes, kinds = breakdown.breakdown(tmp_path, "m")
    assert boxes == 4
    assert kinds == {breakdown.OTHER_COLOUR: 1, breakdown.OWN_COLOUR: 1}


def test_compare_methods_applies_the_calibration_rule_between_two_rows(tmp_path: Path, capsys) -> None:
    from test_reports import _synthetic_run

    compare = _script("compare_methods")
    run = _synthetic_run(tmp_path, refs=True)  # per-seed means: oracle 0.90 / 0.91, swapped 0.60 / 0.61
    assert compare.main([str(run), "--a", "ref-oracle", "--b", "ref-swapped", "--metrics", "clip_i"]) == 0
    line = capsys.readouterr().out
    assert "gap 0.3," in line and "needs 0.0212" in line and "ahead" in line  # 3 * std of (0.90, 0.91)
    assert compare.main([str(run), "--a", "ref-swapped", "--b", "ref-oracle", "--metrics", "clip_i"]) == 1
    assert "NOT ahead" in capsys.readouterr().out


def test_text_encoder_diagnosis_compares_each_word_with_the_others_under_the_same_context() -> None:
    """Shape words are compared after the same colour, colour words before the same shape; by hand on 2-d outputs."""
    import torch

    diagnosis = _script("diagnose_text_encoder")
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    diagonal = torch.tensor([1.0, 1.0])
    outputs = {  # (colour, shape) -> (output at the colour word, output at the shape word)
        ("red", "circle"): (e1, e1), ("red", "square"): (e1, e1),  # red: circle and square alike
        ("blue", "circle"): (e2, e1), ("blue", "square"): (e2, e2),  # blue: orthogonal
    }
    shapes = diagnosis.mean_cosines(outputs, ("circle", "square"), ("red", "blue"), 1)
    assert shapes == {"circle/square": 0.5}  # (1 + 0) / 2
    colours = diagnosis.mean_cosines(outputs, ("red", "blue"), ("circle", "square"), 0)
    assert colours == {"red/blue": 0.0}
    outputs["blue", "square"] = (diagonal, e2)
    half_diagonal = round(0.5**0.5 / 2, 3)  # cos 0 after circle, cos 45 degrees after square
    assert diagnosis.mean_cosines(outputs, ("red", "blue"), ("circle", "square"), 0) == {"red/blue": half_diagonal}


def test_object_count_diagnosis_counts_separate_renders_and_names_objects_as_training_captions_do() -> None:
    """Renders of 1-4 separate objects are counted exactly on every plain background; two objects that touch
    count as one; the prompts are the shape-only training captions of the first N shapes."""
    import numpy as np

    from toyworld.world import PLAIN_BACKGROUNDS, UPRIGHT, ToyObject, place_objects, render

    diagnosis = _script("diagnose_object_count")
    rng = np.random.default_rng(0)
    for background in PLAIN_BACKGROUNDS:
        for count in range(1, 5):
            places = place_objects(rng, count, UPRIGHT)
            objects = [ToyObject("square", "blue", "solid", cx, cy, r) for cx, cy, r in places]
            assert diagnosis.count_objects(render(objects, background)) == count
    touching = [ToyObject("square", "red", "solid", 20.0, 32.0, 10.0), ToyObject("circle", "blue", "solid", 38.0,
                                                                                32.0, 10.0)]
    assert diagnosis.count_objects(render(touching, "white")) == 1
    assert diagnosis.class_word_prompt(1, "gray") == "a circle on a gray background"
    assert diagnosis.class_word_prompt(4, "black") == "a circle, a square, a triangle and a cross on a black background"


def test_object_count_diagnosis_prints_one_row_per_number_of_named_objects(capsys) -> None:
    diagnosis = _script("diagnose_object_count")
    assert diagnosis.main(["--seeds", "1", "--steps", "2", "--threads", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[0] for row in rows] == ["| 1", "| 2", "| 3", "| 4"]
    assert all(sum(int(cell) for cell in row.strip(" |").split(" | ")[2:]) == 1 for row in rows)


def test_grounding_diagnosis_finds_the_committed_worlds_grounded_layers_looking_at_their_objects(capsys) -> None:
    """On the committed base, the two layers its grounding loss read (the last 16x16 and the last 8x8) put well
    over twice the box's share of the grid on the named object's box and the other layers of 8x8 or finer under
    one and a half times it; the table has one row per such layer, in the UNet's order."""
    from bench.layers import cross_attention_layers
    from toyworld.models import load_toy_pipeline

    diagnosis = _script("diagnose_grounding")
    pipe = load_toy_pipeline()
    names = cross_attention_layers(pipe.unet)
    rows = diagnosis.layer_masses(pipe, images=16, timesteps=(200,))
    assert [name for name, *_ in rows] == [name for name in names if "mid_block" not in name]
    last = {resolution: name for name, resolution, *_ in rows}
    assert sorted(last) == [8, 16]
    for name, _, share, masses in rows:
        assert 0 < share < 0.5
        assert masses[0] > 2 * share if name in last.values() else masses[0] < 1.5 * share
    assert diagnosis.main(["--images", "4", "--timesteps", "900", "--threads", "1"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert len(table) == len(rows)


def test_composer_benchmark_times_each_toy_unet_size_and_counts_the_work_it_names(tmp_path: Path) -> None:
    """``--toy-unet small wide``: one result per UNet size, latents sized by the toy VAE's factor of 4 (a 16x16 loss
    grid at level 1 for 64x64 images; SD's factor of 8 would give 8x8), the counted UNet forwards and backward passes
    those of the steps asked for (one re-initialization forward, then a guided forward and a backward per refinement
    step, then the sampling steps), and the wide size's time given as a ratio to the small size's."""
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(SCRIPTS / "bench_composer.py"), "--toy-unet", "small", "wide", "--sizes", "64x64",
            "--regions", "2", "--steps", "4", "--max-refine-steps", "3", "--loss-level", "1", "--repeats", "1",
            "--no-memory", "--device", "cpu", "--json", str(out)]
    printed = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600).stdout
    report = json.loads(out.read_text())
    small, wide = (f"toy world, {size} UNet (random weights)" for size in ("small", "wide"))
    assert report["header"]["models"] == [small, wide]
    results = report["results"]
    assert [r["model"] for r in results] == [small, wide]
    for r in results:
        assert r["loss_grid_hw"] == [16, 16]
        assert (r["unet_forwards"], r["backward_passes"]) == (1 + 3 + 4, 3)
    ratio = results[1]["composer_cpu_s"] / results[0]["composer_cpu_s"]
    assert f"{wide} / {small}, 64x64, 2 regions: LoRA-Composer {ratio:.2f}×" in printed.splitlines()
    refused = subprocess.run([*argv[:2], "--full-sd15", "--toy-unet", "small"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--full-sd15 and --toy-unet name two different models" in refused.stderr
