"""`bench reference create` / `bench check --reference`: band arithmetic, pass, fail, and clear errors.

One reference is measured once per module on the tiny dataset (two cheap methods at 2 steps, one scene,
one seed, three replicates, clip_i with the tiny CLIP) and every test reads or checks against a copy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.plugins import get_plugin_manager, registered_methods
from bench.seeds import scene_seeds
from bench.spec import load_spec
from lcbench.cli import main

REPO = Path(__file__).resolve().parents[1]
METHODS = {"lora-merge": {"steps": 2}, "lora-composer-none": {"num_steps": 2}}
REPLICATES = 3


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread) -> tuple[Path, Path]:
    """(reference file, kept work folder) of a freshly measured reference."""
    root = tmp_path_factory.mktemp("reference")
    out, work = root / "tiny-smoke.json", root / "work"
    argv = ["--quiet", "reference", "create", "--dataset", "random", "--methods", ",".join(METHODS),
            "--scenes", "cat_dog", "--seeds", "1", "--replicates", str(REPLICATES), "--metrics", "clip_i",
            "--out", str(out), "--work", str(work)]
    for method, params in METHODS.items():
        argv += [f"--param={method}.{k}={v}" for k, v in params.items()]
    assert main(argv) == 0
    return out, work


def _copy(reference: tuple[Path, Path], tmp_path: Path, edit=None) -> Path:
    data = json.loads(reference[0].read_text())
    if edit:
        edit(data)
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(data))
    return path


def _store_key(method: str) -> str:
    spec = registered_methods(get_plugin_manager())[method]
    return spec.key(spec.resolve_params(METHODS[method]))


def test_create_writes_bands_that_match_a_hand_computation(reference):
    data = json.loads(reference[0].read_text())
    spec = load_spec(REPO / "datasets" / "random.yaml")
    assert data["format"] == "lcbench-reference/1" and data["name"] == "tiny-smoke"
    assert data["spec_hash"] == spec.spec_hash() and data["scenes"] == ["cat_dog"]
    assert data["methods"] == METHODS and data["metrics"] == ["clip_i"] and data["replicates"] == REPLICATES
    assert (data["k"], data["floor"]) == (3.0, 0.005)
    seeds = scene_seeds(spec.scenes["cat_dog"], REPLICATES, data["seed_scheme"])
    for method in METHODS:
        entry = data["values"][method]["clip_i"]
        # Replicate r is seed index r (n = 1): the mean of that image's region rows in the raw score file.
        folder = reference[1] / "scores" / "clip_i" / "items" / _store_key(method) / "cat_dog"
        by_hand = []
        for r in range(REPLICATES):
            item = json.loads((folder / f"{r:03d}.json").read_text())
            assert item["seed"] == seeds[r]
            by_hand.append(sum(row["value"] for row in item["rows"]) / len(item["rows"]))
        assert entry["replicate_values"] == pytest.approx(by_hand, abs=1e-12)
        mean = sum(by_hand) / REPLICATES
        std = math.sqrt(sum((x - mean) ** 2 for x in by_hand) / (REPLICATES - 1))
        half = max(3.0 * std, 0.005)
        assert entry["value"] == pytest.approx(by_hand[0], abs=1e-12)
        assert entry["seed_std"] == pytest.approx(std, abs=1e-12)
        assert entry["band"] == pytest.approx([by_hand[0] - half, by_hand[0] + half], abs=1e-12)


def test_check_passes_right_after_create(reference, capsys):
    assert main(["--quiet", "check", "--reference", str(reference[0])]) == 0
    out = capsys.readouterr().out
    for method in METHODS:
        line = next(line for line in out.splitlines() if line.startswith(method + " "))
        assert line.split()[1] == "clip_i" and line.rstrip().endswith("OK")
    assert "check OK: 2 of 2" in out and "wall time" in out


def test_check_fails_when_an_override_changes_the_image(reference, capsys):
    # Resume in the reference's own work folder: the unbroken items are there, the override must not reuse them.
    work = reference[1]
    code = main(["--quiet", "check", "--reference", str(reference[0]), "--work", str(work),
                 "--param", "lora-composer-none.guidance_scale=100"])
    out = capsys.readouterr().out
    assert code == 1
    rows = {line.split()[0]: line for line in out.splitlines() if " clip_i " in line}
    assert "FAIL" in rows["lora-composer-none"] and rows["lora-merge"].rstrip().endswith("OK")
    assert "check FAIL: 1 of 2" in out
    unbroken = _store_key("lora-composer-none")
    broken = [p.name for p in (work / "items").iterdir() if p.name.startswith("lora-composer-none@")]
    assert len(broken) == 2 and unbroken in broken
    other = next(name for name in broken if name != unbroken)
    before = np.asarray(Image.open(work / "items" / unbroken / "cat_dog" / "000.png"), dtype=float)
    after = np.asarray(Image.open(work / "items" / other / "cat_dog" / "000.png"), dtype=float)
    assert np.abs(before - after).mean() > 1.0


def test_check_fails_on_a_spec_hash_mismatch(reference, tmp_path, capsys):
    path = _copy(reference, tmp_path, lambda d: d.update(spec_hash="0000000000000000"))
    assert main(["--quiet", "check", "--reference", str(path)]) == 1
    out = capsys.readouterr().out
    problem = [line for line in out.splitlines() if "spec_hash" in line]
    assert len(problem) == 1 and "must be refreshed" in problem[0] and str(path) in problem[0]
    assert "clip_i" not in out  # nothing was run


def _rename_method(data: dict) -> None:
    data["methods"]["lora-vanished"] = data["methods"].pop("lora-merge")
    data["values"]["lora-vanished"] = data["values"].pop("lora-merge")


def _rename_metric(data: dict) -> None:
    data["metrics"] = ["clip_gone"]
    for per in data["values"].values():
        per["clip_gone"] = per.pop("clip_i")


@pytest.mark.parametrize(("edit", "methods", "missing", "why"), [
    (_rename_method, "lora-vanished,lora-composer-none", "lora-vanished", "method not registered here"),
    (_rename_metric, "lora-merge", "clip_gone", "metric not registered here"),
])
def test_check_fails_on_a_missing_method_or_metric(reference, tmp_path, capsys, edit, methods, missing, why):
    path = _copy(reference, tmp_path, edit)
    assert main(["--quiet", "check", "--reference", str(path), "--methods", methods]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if missing in line]
    assert len(lines) == 1 and "FAIL" in lines[0] and why in lines[0]


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["values"]["lora-merge"]["clip_i"].update(band=0.9), "values.lora-merge.clip_i.band"),
    (lambda d: d.pop("seeds"), "seeds"),
    (lambda d: d.update(format="lcbench-reference/0"), "format"),
    (lambda d: d["values"].pop("lora-composer-none"), "values.lora-composer-none"),
])
def test_a_malformed_reference_names_the_file_and_field(reference, tmp_path, capsys, edit, field):
    path = _copy(reference, tmp_path, edit)
    assert main(["--quiet", "check", "--reference", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bench: error: {path}: field '{field}': expected")


def test_a_reference_that_is_not_json_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    assert main(["check", "--reference", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path}: not valid JSON (line 1" in err[0]


def test_check_refuses_a_method_the_reference_does_not_hold(reference, capsys):
    assert main(["check", "--reference", str(reference[0]), "--methods", "lora-switch"]) == 2
    assert "method 'lora-switch' is not in the reference" in capsys.readouterr().err


def test_create_needs_two_replicates(tmp_path, capsys):
    assert main(["reference", "create", "--methods", "lora-merge", "--replicates", "1",
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "--replicates: expected an integer >= 2" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
