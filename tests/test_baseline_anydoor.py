"""AnyDoor adapter: upstream geometry by hand, the external protocol, and the driver in a stub AnyDoor checkout."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_baseline_pbe import FakeContext, make_tiny_bench

from baselines import anydoor

FAKE_DRIVER = """
import json, sys
import numpy as np
from PIL import Image
print("noise on stdout is skipped by the bench")
for line in iter(sys.stdin.readline, ""):
    path = line.strip()
    req = json.load(open(path))
    assert req["protocol"] == "lcbench-anydoor/2"
    ref = np.array(Image.open(req["reference_image"]))
    mask = np.array(Image.open(req["reference_mask"])) > 127
    target = np.array(Image.open(req["target_image"]))
    hint = np.load(req["hint_mask"])
    assert ref.shape == (224, 224, 3) and mask.shape == (224, 224)
    assert target.shape == (512, 512, 3) and hint.shape == (512, 512)
    y1, y2, x1, x2 = req["box_yyxx"]
    target[y1:y2, x1:x2] = ref[mask].mean(axis=0).astype(np.uint8)  # "insert" the object's mean colour
    Image.fromarray(target).save(req["output"])
    print(json.dumps({"protocol": req["protocol"], "request": path, "ok": True, "output": req["output"]}), flush=True)
"""
STUB = Path(__file__).parent / "fixtures" / "anydoor_stub"
STUB_ENV = Path(__file__).parent / "fixtures" / "anydoor_stub_env"


def stub_checkout(root: Path) -> Path:
    """A copy of the stub AnyDoor checkout with ``venv/bin/python``: this interpreter plus the stub packages."""
    home = root / "anydoor"
    shutil.copytree(STUB, home)
    python = home / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(STUB_ENV))} exec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    return home


def stub_calls(home: Path) -> list[dict]:
    """The calls the stub checkout logged."""
    log = home / "stub_calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> FakeContext:
    return make_tiny_bench(tmp_path_factory.mktemp("tiny"))


def test_box_conversion_and_target_geometry_by_hand() -> None:
    # canvas 128 x 64; box x 0.55-0.95 -> px 70..122, y 0.1-0.8 -> px 6..51; upstream keeps inclusive ends
    yyxx = anydoor.box_to_yyxx((0.55, 0.1, 0.95, 0.8), 128, 64)
    assert yyxx == (6, 50, 70, 121)
    # x1.1 about (95.5, 28): h 49.5, w 57.2 -> y int(3.25)=3 .. int(52.75)=52, x int(66.9)=66 .. int(124.1)=124
    assert anydoor.expand_bbox((64, 128), yyxx, 1.1) == (3, 52, 66, 124)
    # x2 about (95, 27.5): h 100, w 118 -> y -22..77, x 36..154, clipped to 0..64, 36..128; already as square
    # as the canvas allows: cx 82, w 92 > h 64 -> y 32 -/+ 46 clipped to 0..64
    canvas = np.zeros((64, 128, 3), np.uint8)
    target = anydoor.prepare_target(canvas, yyxx, 2.0)
    assert target.crop_yyxx == (0, 64, 36, 128)
    assert target.sizes == (64, 92, 92, 92)  # crop 64 x 92, padded by 14 rows above, 14 below
    # box in the crop (3, 52, 30, 88) -> padded (17, 66, 30, 88) -> x 512/92
    assert target.box_yyxx == (95, 367, 167, 490)
    assert target.hint_mask[0, 0] == -1 and target.hint_mask[511, 300] == -1  # padding (demo: -1)
    assert target.hint_mask[200, 300] == 1 and target.hint_mask[200, 50] == 0
    assert target.image.shape == (512, 512, 3)


def test_pad_to_square_and_crop_back_by_hand() -> None:
    padded, first = anydoor.pad_to_square(np.ones((2, 5)), -1)
    assert first == 1 and padded.shape == (5, 5)
    assert (padded[0] == -1).all() and (padded[3:] == -1).all() and (padded[1:3] == 1).all()
    canvas = np.zeros((64, 128, 3), np.uint8)
    target = anydoor.prepare_target(canvas, (6, 50, 70, 121), 2.0)
    out = anydoor.crop_back(np.full((512, 512, 3), 200, np.uint8), canvas, target, margin=5)
    changed = out.any(axis=-1)
    expected = np.zeros((64, 128), bool)
    expected[5:59, 41:123] = True  # crop (0, 64, 36, 128) minus a 5 px margin
    assert np.array_equal(changed, expected) and (out[expected] == 200).all()


def test_prepare_reference_by_hand() -> None:
    image = np.zeros((48, 40, 3), np.uint8)
    mask = np.zeros((48, 40), np.uint8)
    mask[8:40, 6:30] = 1
    image[8:40, 6:30] = 90
    ref, ref_mask = anydoor.prepare_reference(image, mask)
    # bbox slice [8:39, 6:29] -> 31 x 23; x1.2 -> 37 x 27 (pad 3/3 rows, 2/2 cols); square 37 (5/5 cols)
    rows, cols = np.flatnonzero(ref_mask.max(1) > 127), np.flatnonzero(ref_mask.max(0) > 127)
    assert abs(rows[0] - 3 / 37 * 224) <= 2 and abs(rows[-1] + 1 - 34 / 37 * 224) <= 2
    assert abs(cols[0] - 7 / 37 * 224) <= 2 and abs(cols[-1] + 1 - 30 / 37 * 224) <= 2
    assert (ref[0, 0] == 255).all() and (ref[112, 112] == 90).all()


def test_unconfigured_is_unavailable_and_fails_before_any_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(anydoor.ENV_COMMAND, raising=False)
    steps = anydoor.unavailable()
    assert steps and anydoor.ENV_COMMAND in steps and "git clone" in steps
    spec = anydoor.method_spec()
    with pytest.raises(RuntimeError, match="not configured"):
        spec.create(spec.resolve_params({}))
    monkeypatch.setenv(anydoor.ENV_COMMAND, "true")
    assert anydoor.unavailable() is None


def test_command_parameter_makes_it_available_to_the_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lcbench.cli import main

    monkeypatch.delenv(anydoor.ENV_COMMAND, raising=False)
    spec = anydoor.method_spec()
    assert spec.unavailable(spec.defaults) is not None
    assert spec.unavailable(spec.resolve_params({"command": "python driver.py"})) is None
    assert main(["--quiet", "run", "--methods", "anydoor", "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run" / "items").exists()


def test_generates_with_a_fake_command(ctx: FakeContext, tmp_path: Path) -> None:
    script = tmp_path / "fake_anydoor.py"
    script.write_text(FAKE_DRIVER)
    spec = anydoor.method_spec()
    params = spec.resolve_params({"command": f"{sys.executable} {script}", "background_steps": 2})
    method = spec.create(params)
    scene = ctx.spec.scenes["two-dogs"]
    gen = method.generate(scene, 5, ctx)
    background = np.array(anydoor.scene_background(scene, 5, ctx, params)[0])
    out = np.array(gen.image)
    assert out.shape == (64, 128, 3)
    touched = np.zeros(out.shape[:2], bool)
    for box in gen.record["boxes"]:
        y1, y2, x1, x2 = box["crop_yyxx"]
        touched[y1 + 5 : y2 - 5, x1 + 5 : x2 - 5] = True
    assert np.array_equal(out[~touched], background[~touched])
    assert gen.record["boxes"][0]["reference_mask"].endswith(".png")  # dogA has masks
    assert gen.record["boxes"][1]["reference_mask"].startswith("full image")
    # dogB (the later box) was filled with its reference's mean colour (blue-ish) inside its box
    x0, y0, x1, y1 = 75, 12, 117, 46
    assert out[y0:y1, x0:x1, 2].mean() > out[y0:y1, x0:x1, 0].mean() + 50


def test_a_failing_command_raises(ctx: FakeContext, tmp_path: Path) -> None:
    spec = anydoor.method_spec()
    method = spec.create(spec.resolve_params({"command": f"{sys.executable} -c 'import sys; sys.exit(3)'"}))
    with pytest.raises(RuntimeError, match="exited 3"):
        method.call({"output": str(tmp_path / "none.png")}, tmp_path)


def test_driver_runs_as_documented_in_a_stub_checkout(
    ctx: FakeContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented command, run by the bench in a stub checkout laid out as upstream main.

    Upstream main (ali-vilab/AnyDoor 44ca2b2) has ``datasets/data_utils.py`` (``run_inference.py``:
    ``from datasets.data_utils import *``), ``cldm/model.py`` and ``cldm/ddim_hacked.py``; the driver
    must import them from ``$ANYDOOR_HOME`` although it is run by path from elsewhere, load the model
    once for all boxes of all scenes, and answer every request with a PNG.
    """
    home = stub_checkout(tmp_path)
    monkeypatch.setenv("ANYDOOR_HOME", str(home))
    monkeypatch.setenv(anydoor.ENV_DEVICE, "cpu")
    monkeypatch.delenv(anydoor.ENV_COMMAND, raising=False)
    command = anydoor.documented_command()
    assert command in anydoor.setup_steps() and anydoor.DRIVER.is_file()
    spec = anydoor.method_spec()
    params = spec.resolve_params({"command": command, "background_steps": 2, "steps": 7, "guidance_scale": 4.5})
    method = spec.create(params)
    scene = ctx.spec.scenes["two-dogs"]
    try:
        gen = method.generate(scene, 5, ctx)
        again = method.generate(scene, 6, ctx)
        with pytest.raises(RuntimeError, match="unsupported protocol"):  # a bad request: an error answer ...
            method.call({"protocol": "other", "output": str(tmp_path / "x.png")}, tmp_path)
        third = method.generate(scene, 5, ctx)  # ... and the same process goes on serving
        driver = method._driver
        assert driver is not None and driver.alive()
    finally:
        method.close()
    assert driver.proc.returncode == 0  # closing stdin ends the driver cleanly

    calls = stub_calls(home)
    events = [c["event"] for c in calls]
    assert events.count("create_model") == 1 and events.count("load_state_dict") == 1
    assert events.count("sample") == 3 * len(scene.regions)
    assert len({c["pid"] for c in calls}) == 1
    load = next(c for c in calls if c["event"] == "load_state_dict")
    assert load["location"] == "cpu" and load["path"] == "./checkpoints/stub.ckpt"
    samples = [c for c in calls if c["event"] == "sample"]
    assert {c["steps"] for c in samples} == {7} and {c["guidance_scale"] for c in samples} == {4.5}
    assert all(c["batch_size"] == 1 and c["shape"] == [4, 64, 64] and c["eta"] == 0.0 for c in samples)
    assert all(c["device"] == "cpu" and c["control_scales"] == [1.0] * 13 for c in samples)
    assert [c["seed"] for c in samples[:2]] == [b["seed"] for b in gen.record["boxes"]]

    assert gen.record["protocol"] == "lcbench-anydoor/2"
    for box in gen.record["boxes"] + again.record["boxes"]:
        assert box["driver"]["device"] == "cpu" and box["driver"]["model_loads"] == 1
        assert box["driver"]["pretrained_model"] == "./checkpoints/stub.ckpt"
        assert Path(box["driver"]["anydoor_home"]).resolve() == home.resolve()
    out, background = np.array(gen.image), np.array(anydoor.scene_background(scene, 5, ctx, params)[0])
    assert out.shape == (64, 128, 3) and not np.array_equal(out, background)
    # the stub returns the collage, so dogB's (blue) reference now fills dogB's box
    x0, y0, x1, y1 = 75, 12, 117, 46
    assert out[y0:y1, x0:x1, 2].mean() > out[y0:y1, x0:x1, 0].mean() + 30
    assert np.array_equal(np.array(third.image), out)  # same seed, same image


def test_driver_one_shot_keeps_stdout_for_answers(tmp_path: Path) -> None:
    """Run by path from another directory with a request file: the checkout is found, stdout holds only the
    answer although upstream's (here: the stub's) model code prints to stdout."""
    home = stub_checkout(tmp_path)
    ref, ref_mask = anydoor.prepare_reference(np.full((40, 30, 3), 200, np.uint8), np.ones((40, 30), np.uint8))
    target = anydoor.prepare_target(np.zeros((64, 128, 3), np.uint8), (10, 40, 20, 60), 2.0)
    files = {"reference_image": tmp_path / "ref.png", "reference_mask": tmp_path / "ref_mask.png",
             "target_image": tmp_path / "target.png", "hint_mask": tmp_path / "hint.npy"}
    Image.fromarray(ref).save(files["reference_image"])
    Image.fromarray(ref_mask).save(files["reference_mask"])
    Image.fromarray(target.image).save(files["target_image"])
    np.save(files["hint_mask"], target.hint_mask)
    request = {"protocol": anydoor.PROTOCOL, **{k: str(v) for k, v in files.items()},
               "box_yyxx": list(target.box_yyxx), "steps": 3, "guidance_scale": 5.0, "strength": 1.0, "seed": 11,
               "output": str(tmp_path / "out.png"), "device": "cpu"}
    (tmp_path / "req.json").write_text(json.dumps(request))
    proc = subprocess.run([str(home / "venv" / "bin" / "python"), str(anydoor.DRIVER), "--anydoor-home", str(home),
                           str(tmp_path / "req.json")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == 1 and answers[0]["ok"] and answers[0]["request"] == str(tmp_path / "req.json")
    assert "Loaded model config from" in proc.stderr and "Data shape for DDIM sampling" in proc.stderr
    out = np.array(Image.open(tmp_path / "out.png"))
    y1, y2, x1, x2 = target.box_yyxx
    assert out.shape == (512, 512, 3) and abs(int(out[(y1 + y2) // 2, (x1 + x2) // 2, 0]) - 200) <= 2
