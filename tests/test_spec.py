"""Spec loading: a valid spec loads; all bad input names the file, the field and the expected value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.spec import SpecError, load_spec

VALID: dict[str, Any] = {
    "name": "mini",
    "description": "two pets",
    "asset_root": "assets",
    "base_models": {"real": "models/sd15"},
    "concepts": [
        {
            "id": "catA",
            "class_name": "cat",
            "style": "real",
            "tokens": "<catA1> <catA2>",
            "lora": "loras/catA.pth",
            "references": "data/catA",
        },
        {
            "id": "dogA",
            "class_name": "dog",
            "style": "real",
            "tokens": "<dogA1> <dogA2>",
            "lora": "loras/dogA.pth",
            "references": "data/dogA",
            "masks": "data/dogA_mask",
        },
        {
            "id": "park",
            "class_name": "park",
            "style": "real",
            "tokens": "<park1> <park2>",
            "lora": "loras/park.pth",
            "references": "data/park",
            "background": True,
        },
    ],
    "scenes": [
        {
            "id": "pets",
            "prompt": "a cat and a dog at <park1> <park2>",
            "negative_prompt": "blurry",
            "width": 128,
            "height": 64,
            "seed": 7,
            "regions": [
                {"concept": "catA", "box": [0.0, 0.1, 0.5, 1.0], "prompt": "a <catA1> <catA2>, sitting"},
                {
                    "concept": "dogA",
                    "box": [0.5, 0.1, 1.0, 1.0],
                    "prompt": "a <dogA1> <dogA2>, running",
                    "negative_prompt": "dark",
                    "adapter_weights": {"sketch": 0.8},
                },
            ],
            "image_guidance": True,
            "conditions": {"sketch": "cond/pets.png"},
            "adapter_global_weights": {"sketch": 0.0},
        },
    ],
    "benchmarks": [{"id": "all", "scenes": "all", "seeds": 3, "seed_scheme": "offset"}],
}


def _write(tmp_path: Path, data: Any, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8"
    )
    return path


def _error(tmp_path: Path, data: Any) -> SpecError:
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert str(path) in str(err), "the message must name the file"
    return err


def _mutated(edit: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    edit(data)
    return data


def test_valid_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, VALID))
    assert spec.name == "mini" and spec.asset_root == "assets" and spec.base_models == {"real": "models/sd15"}
    assert list(spec.concepts) == ["catA", "dogA", "park"]
    assert spec.concepts["dogA"].masks == "data/dogA_mask" and spec.concepts["catA"].masks is None
    assert spec.concepts["catA"].token_list == ("<catA1>", "<catA2>")
    scene = spec.scenes["pets"]
    assert (scene.width, scene.height, scene.seed, scene.style) == (128, 64, 7, "real")
    assert scene.regions[0].box == (0.0, 0.1, 0.5, 1.0)
    assert scene.regions[1].negative_prompt == "dark" and scene.regions[0].negative_prompt == ""
    assert scene.regions[1].adapter_weights == {"sketch": 0.8}
    assert scene.image_guidance and scene.conditions == {"sketch": "cond/pets.png"}
    assert scene.concept_ids == ("catA", "dogA")
    assert spec.scene_background(scene) is spec.concepts["park"]
    assert spec.benchmarks["all"].scenes == ("pets",) and spec.benchmarks["all"].seeds == 3
    # The hash depends on content, not location.
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert load_spec(_write(other, VALID)).spec_hash() == spec.spec_hash()
    changed = _mutated(lambda d: d["scenes"][0].update(seed=8))
    assert load_spec(_write(other, changed, "changed.yaml")).spec_hash() != spec.spec_hash()


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    text = "name: mini\nconcepts:\n  - id: catA\n    tokens: [unclosed\nscenes: []\n"
    err = _error(tmp_path, text)
    assert "yaml line" in err.field_path and "well-formed YAML" in err.expected
    line = int(err.field_path.split("line ")[1].split(",")[0])
    assert 4 <= line <= 5  # the unclosed bracket (line 4) is reported where the parser notices it


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="an existing YAML spec file") as info:
        load_spec(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d["concepts"][1].update(colour="red"), "concepts[1].colour"),
        (lambda d: d["scenes"][0].update(size=64), "scenes[0].size"),
        (lambda d: d["scenes"][0]["regions"][1].update(weight=1.0), "scenes[0].regions[1].weight"),
        (lambda d: d["benchmarks"][0].update(steps=4), "benchmarks[0].steps"),
    ],
    ids=["top", "concept", "scene", "region", "benchmark"],
)
def test_unknown_key(tmp_path: Path, edit: Any, field: str) -> None:
    err = _error(tmp_path, _mutated(edit))
    assert err.field_path == field
    assert "one of the known keys" in err.expected and f"'{field}'" in str(err)


def test_unknown_concept_in_region(tmp_path: Path) -> None:
    err = _error(tmp_path, _mutated(lambda d: d["scenes"][0]["regions"][0].update(concept="cow")))
    assert err.field_path == "scenes[0].regions[0].concept"
    assert "a concept id defined in 'concepts'" in err.expected and "'catA'" in err.expected
    assert "'cow'" in str(err)


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ([0.0, 0.1, 1.2, 1.0], "outside [0, 1]"),
        ([-0.1, 0.1, 0.5, 1.0], "outside [0, 1]"),
        ([0.3, 0.1, 0.3, 1.0], "zero area"),
        ([0.6, 0.1, 0.4, 1.0], "x0 >= x1"),
        ([0.0, 0.1, 0.5], "4 numbers"),
        ("0 0 1 1", "4 numbers"),
    ],
    ids=["x1>1", "x0<0", "zero-area", "x0>x1", "three-numbers", "string"],
)
def test_bad_box(tmp_path: Path, box: Any, reason: str) -> None:
    err = _error(tmp_path, _mutated(lambda d: d["scenes"][0]["regions"][1].update(box=box)))
    assert err.field_path == "scenes[0].regions[1].box"
    assert "a box [x0, y0, x1, y1]" in err.expected and reason in err.expected


@pytest.mark.parametrize(("key", "value"), [("width", 100), ("height", 60)])
def test_size_not_multiple_of_8(tmp_path: Path, key: str, value: int) -> None:
    err = _error(tmp_path, _mutated(lambda d: d["scenes"][0].update({key: value})))
    assert err.field_path == f"scenes[0].{key}"
    assert err.expected == "a multiple of 8 pixels" and f"(got {value})" in str(err)


def test_size_below_minimum(tmp_path: Path) -> None:
    err = _error(tmp_path, _mutated(lambda d: d["scenes"][0].update(width=0)))
    assert err.field_path == "scenes[0].width" and err.expected == "an integer >= 8"


def test_region_prompt_without_concept_tokens(tmp_path: Path) -> None:
    err = _error(
        tmp_path, _mutated(lambda d: d["scenes"][0]["regions"][0].update(prompt="a <catA1>, sitting"))
    )
    assert err.field_path == "scenes[0].regions[0].prompt"
    assert "containing the concept tokens ['<catA2>']" in err.expected


def test_unknown_benchmark_scene(tmp_path: Path) -> None:
    err = _error(tmp_path, _mutated(lambda d: d["benchmarks"][0].update(scenes=["pets", "zoo"])))
    assert err.field_path == "benchmarks[0].scenes"
    assert "scene ids defined in 'scenes'" in err.expected and "'zoo'" in str(err)


@pytest.mark.parametrize(
    ("edit", "field", "expected"),
    [
        (
            lambda d: d["concepts"].append(copy.deepcopy(d["concepts"][0])),
            "concepts[3].id",
            "a unique concept id",
        ),
        (lambda d: d["scenes"].append(copy.deepcopy(d["scenes"][0])), "scenes[1].id", "a unique scene id"),
        (
            lambda d: d["benchmarks"].append(copy.deepcopy(d["benchmarks"][0])),
            "benchmarks[1].id",
            "a unique benchmark id",
        ),
    ],
    ids=["concept", "scene", "benchmark"],
)
def test_duplicate_ids(tmp_path: Path, edit: Any, field: str, expected: str) -> None:
    err = _error(tmp_path, _mutated(edit))
    assert err.field_path == field and err.expected == expected


@pytest.mark.parametrize(
    ("edit", "field", "expected"),
    [
        (lambda d: d["concepts"][0].update(style="cartoon"), "concepts[0].style", "one of ['real', 'anime']"),
        (
            lambda d: d["concepts"][0].update(tokens="catA1 catA2"),
            "concepts[0].tokens",
            "space-separated tokens",
        ),
        (lambda d: d["concepts"][0].pop("lora"), "concepts[0].lora", "a string (required field is missing)"),
        (lambda d: d["scenes"][0].update(seed=-1), "scenes[0].seed", "an integer >= 0"),
        (
            lambda d: d["scenes"][0].update(conditions={"depth": "x.png"}),
            "scenes[0].conditions",
            "a mapping of ['sketch', 'pose'] to image paths",
        ),
        (
            lambda d: d["scenes"][0].update(conditions={"sketch": 3}),
            "scenes[0].conditions.sketch",
            "an image path",
        ),
        (
            lambda d: d["scenes"][0].update(conditions={}),
            "scenes[0].conditions",
            "when image_guidance is true",
        ),
        (
            lambda d: d["scenes"][0]["regions"][1].update(adapter_weights={"sketch": "high"}),
            "scenes[0].regions[1].adapter_weights.sketch",
            "a number",
        ),
        (
            lambda d: d["scenes"][0].update(style="anime"),
            "scenes[0].style",
            "a style with a base model ['real']",
        ),
        (
            lambda d: d["benchmarks"][0].update(seed_scheme="random"),
            "benchmarks[0].seed_scheme",
            "one of ['paper', 'offset']",
        ),
        (lambda d: d.update(loss_level="4"), "loss_level", "an integer downsampling factor"),
    ],
    ids=[
        "style",
        "tokens",
        "lora-missing",
        "seed",
        "condition-kind",
        "condition-path",
        "guidance-without-image",
        "adapter-weight",
        "style-without-base-model",
        "seed-scheme",
        "loss-level",
    ],
)
def test_other_bad_fields(tmp_path: Path, edit: Any, field: str, expected: str) -> None:
    err = _error(tmp_path, _mutated(edit))
    assert err.field_path == field and expected in err.expected


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    err = _error(tmp_path, "- just\n- a list\n")
    assert err.field_path == "<top>" and err.expected == "a mapping"
