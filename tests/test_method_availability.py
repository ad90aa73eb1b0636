"""Which methods run on a dataset, and on which of its scenes: availability with the dataset, scenes a method
leaves out, scenes upstream disables, and how `bench list` / `bench run` / the manifest say so."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.catalog import load_dataset
from bench.methods import MethodSpec
from bench.runner import MethodRequest, RunError, build_manifest, check_available, merge_manifest, plan_items
from lcbench.cli import main, select_methods, select_scenes

PLUGIN = '''
from PIL import Image

from bench.hookspecs import hookimpl
from bench.methods import Generation, MethodSpec


class Grey:
    def __init__(self, params):
        self.params = params

    def generate(self, scene, seed, ctx):
        return Generation(image=Image.new("RGB", (scene.width, scene.height), (128, 128, 128)))


def not_on_random(params, dataset=None):
    return "no model of the random world" if dataset is not None and dataset.name == "random" else None


@hookimpl
def bench_methods():
    return [
        MethodSpec(name="grey-real", description="grey", create=Grey,
                   skip_scene=lambda params, scene: None if scene.style == "real" else "real scenes only"),
        MethodSpec(name="grey-never", description="grey", create=Grey, unavailable=not_on_random),
    ]
'''


def _grey(**fields) -> MethodSpec:
    return MethodSpec(name="grey", description="", create=lambda params: None, **fields)


def test_unavailable_gets_the_dataset_and_a_one_argument_check_still_works() -> None:
    toy = load_dataset("toy")
    assert _grey(unavailable=lambda params: "old style").availability({}, toy) == "old style"
    assert _grey(unavailable=lambda params, dataset: dataset.name).availability({}, toy) == "toy"
    assert _grey(unavailable=lambda params, dataset=None: dataset).availability({}) is None
    assert _grey().availability({}, toy) is None and _grey().skipped_scenes({}, toy, list(toy.scenes)) == {}


def test_bench_list_says_paint_by_example_is_unavailable_on_the_toy_dataset(capsys) -> None:
    assert main(["list", "methods"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("paint-by-example "))
    assert "unavailable" not in line  # no dataset given: nothing to resolve
    assert main(["list", "methods", "--dataset", "toy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("methods (on dataset 'toy'):")
    line = next(x for x in out.splitlines() if x.strip().startswith("paint-by-example "))
    assert "[unavailable: on dataset 'toy': parameter 'model' is 'auto'" in line and "builtin:toy-pbe" in line
    assert main(["list", "methods", "--dataset", "random"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("paint-by-example "))
    assert "unavailable" not in line and "[skips 1 scene(s): paint-by-example runs on real-style scenes" in line


def test_methods_all_leaves_out_what_cannot_run_on_the_dataset_with_a_line(capsys) -> None:
    toy, unavailable = load_dataset("toy"), {}
    names = [m.spec.name for m in select_methods("all", {}, toy, unavailable)]
    out = capsys.readouterr().out
    assert "paint-by-example" not in names and "lora-composer" in names
    assert "skipping method 'paint-by-example': unavailable on dataset 'toy': parameter 'model' is 'auto'" in out
    assert "no builtin:toy-pbe" in unavailable["paint-by-example"]
    forced = select_methods("all", {"paint-by-example": {"model": "builtin:random-pbe"}}, toy)
    assert "paint-by-example" in [m.spec.name for m in forced]
    explicit = select_methods("paint-by-example", {}, toy)  # asked for by name: the runner refuses it
    with pytest.raises(RunError, match="method 'paint-by-example' is unavailable: on dataset 'toy': "):
        check_available(explicit, toy)


def test_runner_plans_no_image_of_a_left_out_scene_and_the_manifest_says_why() -> None:
    random = load_dataset("random")
    pbe = select_methods("paint-by-example", {}, random)
    scenes = ["cat_dog", "girl_boy"]
    items = plan_items(random, pbe, scenes, 2, "paper")
    assert {item.key.scene for item in items} == {"cat_dog"} and len(items) == 2
    assert len(plan_items(random, select_methods("paint-by-example", {"paint-by-example": {"styles": "all"}},
                                                 random), scenes, 2, "paper")) == 4
    manifest = build_manifest(random, SimpleNamespace(root=Path("/assets")), pbe, scenes, 2, "paper", None,
                              unavailable={"anydoor": "no command"})
    skipped = manifest["methods"]["paint-by-example"]["skipped_scenes"]
    assert list(skipped) == ["girl_boy"] and "real-style scenes" in skipped["girl_boy"]
    assert manifest["unavailable_methods"] == {"anydoor": "no command"}
    # a later run on the same folder keeps what was left out, and a method that now runs is no longer listed
    anydoor = [MethodRequest(m.spec, {**m.params, "command": "x"}) for m in select_methods("anydoor", {}, random)]
    later = build_manifest(random, SimpleNamespace(root=Path("/assets")), anydoor, ["cat_dog"], 2, "paper", None)
    merged = merge_manifest(manifest, later, Path("run"))
    assert merged["unavailable_methods"] == {}
    assert merged["methods"]["paint-by-example"]["skipped_scenes"] == skipped


def test_bench_run_prints_what_it_leaves_out_and_records_it(tmp_path, monkeypatch, capsys) -> None:
    plugin = tmp_path / "grey_plugin.py"
    plugin.write_text(PLUGIN)
    monkeypatch.setenv("LCBENCH_PLUGINS", "bench.builtin,randomworld.plugin,grey_plugin")
    out = tmp_path / "run"
    assert main(["--plugins", str(plugin), "--quiet", "run", "--methods", "all", "--dataset", "random",
                 "--benchmark", "smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipping method 'grey-never': unavailable on dataset 'random': no model of the random world" in printed
    assert "method 'grey-real' skips 1 scene(s) (girl_boy): real scenes only" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["unavailable_methods"] == {"grey-never": "no model of the random world"}
    assert manifest["methods"]["grey-real"]["skipped_scenes"] == {"girl_boy": "real scenes only"}
    assert sorted(p.parent.name for p in (out / "items").glob("*/*/*.png")) == ["cat_dog"]


def test_disabled_and_broken_paper_scenes_are_left_out_unless_asked(capsys) -> None:
    paper = load_dataset("paper")
    _, scenes, _, _ = select_scenes(paper, "paper", None, None)
    out = capsys.readouterr().out
    left_out = {"3girl2", "potter+hermione+rock_background", "2real", "2real2"}
    assert scenes == [s for s in paper.benchmarks["paper"].scenes if s not in left_out]
    for scene_id in left_out:
        scene = paper.scenes[scene_id]
        assert (f"skipping scene '{scene_id}' ({scene.status}: {scene.status_reason}); --include-disabled runs it"
                in out)
    _, every, _, _ = select_scenes(paper, "paper", None, None, include_disabled=True)
    assert every == list(paper.benchmarks["paper"].scenes) and capsys.readouterr().out == ""


def test_bench_run_check_assets_and_reference_create_skip_disabled_scenes(tmp_path, monkeypatch, capsys) -> None:
    assert main(["run", "--dataset", "paper", "--scenes", "2real", "--methods", "lora-merge"]) == 2
    captured = capsys.readouterr()
    assert "skipping scene '2real' (disabled-upstream:" in captured.out
    assert "every selected scene of" in captured.err and "--include-disabled" in captured.err

    assert main(["check-assets", "--dataset", "paper", "--assets", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "skipping scene '3girl2' (broken-upstream:" in out and "missing" in out
    assert main(["check-assets", "--dataset", "paper", "--assets", str(tmp_path), "--include-disabled"]) == 1
    assert "skipping scene" not in capsys.readouterr().out

    import lcbench.regression

    seen = {}

    def measure(measurement, *args, **kwargs):
        seen["scenes"] = list(measurement.scenes)
        raise RuntimeError("measured nothing (test)")

    monkeypatch.setattr(lcbench.regression, "create_reference", measure)
    command = ["reference", "create", "--dataset", "paper", "--scenes", "2real,4real", "--methods", "lora-merge",
               "--metrics", "clip_i", "--out", str(tmp_path / "ref.json")]
    assert main(command) == 2
    assert seen["scenes"] == ["4real"] and "skipping scene '2real'" in capsys.readouterr().out
    assert main([*command, "--include-disabled"]) == 2
    assert seen["scenes"] == ["2real", "4real"]
