"""Concept vanishing / confusion, the spec's evaluation section and toy CLIP resolution.

Rows are checked against hand-written expectations: the toy judge's rules over a stub classifier with
known readings, and over a fake classifier that reads colour and fill from the pixels of real toy-world
renders. The toy definitions as they were before the box-judge protocol (``old_vanished`` /
``old_confused`` below, copied from the former ``metrics/box_concepts.py``) must give the same values as
the protocol on every reading and on real renders read by the committed classifier.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_metrics_fixtures import FolderReferences, noise_image

from bench.boxes import to_xyxy_pixels
from bench.models import ModelError
from bench.resolved import resolved_document
from bench.spec import SpecError, _scene_to_plain, load_spec
from bench.store import ItemKey, RunStore
from lcbench.cli import main
from metrics.api import ScoreItem
from metrics.context import ScoreContext, clip_choice
from metrics.models import RANDOM_CLIP, ClipEmbedder, file_hash
from metrics.plugin import builtin_metrics
from metrics.scoring import default_metrics, score_run
from toyworld.classifier import SHAPE_LABELS, BoxClassifier, BoxPrediction, ToyBoxJudge, classify_boxes, describe
from toyworld.clip import CLIP_CONFIG, TOY_CLIP
from toyworld.world import COLOURS, PLAIN_BACKGROUNDS, ToyObject, render

SPECS = {m.name: m for m in builtin_metrics()}


def _concept(cid: str, shape: str | None, colour: str | None, texture: str = "solid", **extra: Any) -> dict:
    data = {"id": cid, "class_name": shape or "thing", "style": "real", "tokens": f"<{cid}1> <{cid}2>",
            "lora": f"{cid}.pt", "references": f"refs/{cid}", **extra}
    attributes = {k: v for k, v in (("shape", shape), ("colour", colour), ("texture", texture)) if v is not None}
    if shape or colour:
        data["attributes"] = attributes
    return data


def _region(concept: str, box: list[float]) -> dict:
    return {"concept": concept, "box": box, "prompt": f"a <{concept}1> <{concept}2>"}


QUADRANTS = {"tl": [0, 0, 0.5, 0.5], "tr": [0.5, 0, 1, 0.5], "bl": [0, 0.5, 0.5, 1], "br": [0.5, 0.5, 1, 1]}
PIXEL_BOXES = {"tl": (0, 0, 32, 32), "tr": (32, 0, 64, 32), "bl": (0, 32, 32, 64), "br": (32, 32, 64, 64)}

SPEC: dict[str, Any] = {
    "name": "boxes",
    "evaluation": {"classifier": "builtin:toy-classifier"},
    "concepts": [
        _concept("ruby", "circle", "red", "striped"),
        _concept("jade", "square", "green", "dotted"),
        _concept("amber", "triangle", "yellow"),
        _concept("plain", None, None),  # no attributes: never classified, no row
        _concept("sand", None, "yellow", background=True),  # a background: no row, not a rival either
    ],
    "scenes": [
        {
            "id": "quad",
            "prompt": "four things on <sand1> <sand2>",
            "width": 64,
            "height": 64,
            "regions": [_region("ruby", QUADRANTS["tl"]), _region("jade", QUADRANTS["tr"]),
                        _region("amber", QUADRANTS["bl"]), _region("plain", QUADRANTS["br"])],
        },
        {
            "id": "wide",
            "prompt": "two things",
            "width": 128,
            "height": 64,
            "regions": [_region("ruby", [0.0, 0.25, 0.25, 0.75]), _region("jade", [0.5, 0.0, 1.0, 1.0])],
        },
    ],
    "benchmarks": [{"id": "all", "scenes": "all", "seeds": 1}],
}


def _write_spec(folder: Path, data: dict, name: str = "boxes.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _with(**changes: Any) -> dict:
    data = copy.deepcopy(SPEC)
    data.update(changes)
    return data


class StubClassifier:
    """Returns preset readings call by call and records the boxes it was asked about."""

    def __init__(self, readings: list[list[tuple[str, str, str]]]):
        self.readings = list(readings)
        self.calls: list[tuple[Image.Image, list[tuple[int, int, int, int]]]] = []

    def __call__(self, image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> list[BoxPrediction]:
        self.calls.append((image, list(boxes)))
        return [BoxPrediction(s, c, t, 0.9) for s, c, t in self.readings.pop(0)]


class StubJudge(ToyBoxJudge):
    """The toy box judge (its rules) over a stub classifier's readings."""

    def __init__(self, classify: Any):
        super().__init__(None, "builtin:toy-classifier", "sha256:stub")  # type: ignore[arg-type]
        self.read = classify  # type: ignore[method-assign]


# The toy definitions before the box-judge protocol, verbatim from the former metrics/box_concepts.py.
OLD_CHECKED = ("shape", "colour")


def old_checked_attributes(concept: Any) -> dict[str, str]:
    if concept.background:
        return {}
    return {k: concept.attributes[k] for k in OLD_CHECKED if k in concept.attributes}


def old_vanished(prediction: Any, own: dict[str, str]) -> bool:
    return prediction.shape == "none" or any(getattr(prediction, k) != v for k, v in own.items())


def old_confused(prediction: Any, own: dict[str, str], others: list[dict[str, str]]) -> bool:
    if prediction.shape == "none":
        return False
    return any(
        k in own and getattr(prediction, k) == theirs.get(k) != own[k] for theirs in others for k in OLD_CHECKED
    )


def old_rows(spec: Any, scene: Any, predictions: dict[int, Any], mode: str) -> list[tuple[str, int, float, str]]:
    """(concept, region, value, predicted) as the former metric wrote them."""
    rows = []
    for index, prediction in predictions.items():
        concept_id = scene.regions[index].concept
        own = old_checked_attributes(spec.concepts[concept_id])
        if mode == "vanishing":
            value = old_vanished(prediction, own)
        else:
            others = [old_checked_attributes(spec.concepts[c]) for c in spec.scene_concepts(scene) if c != concept_id]
            value = old_confused(prediction, own, others)
        rows.append((concept_id, index, float(value), describe(prediction)))
    return rows


def _context(spec_path: Path, classify: Any) -> ScoreContext:
    ctx = ScoreContext(load_spec(spec_path), FolderReferences(spec_path.parent))
    ctx._embedders["dataset_judge"] = StubJudge(classify)
    return ctx


def _obj(shape: str, colour: str, box: tuple[int, int, int, int]) -> ToyObject:
    """An upright solid object filling its box (a circle touches every side)."""
    x0, y0, x1, y1 = box
    return ToyObject(shape, colour, "solid", (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2)


def _scores(metric: str, items: list[ScoreItem], ctx: ScoreContext) -> list[list[dict]]:
    return SPECS[metric].create({}).score(items, ctx)


# -- spec ---------------------------------------------------------------------------------------------


def _old_hash(spec: Any) -> str:
    """spec_hash as it was before attributes and evaluation existed."""
    concepts = {}
    for key, concept in spec.concepts.items():
        plain = asdict(concept)
        del plain["attributes"]
        concepts[key] = plain
    payload = {"name": spec.name, "base_models": dict(spec.base_models), "concepts": concepts,
               "scenes": {k: _scene_to_plain(v) for k, v in spec.scenes.items()},
               "benchmarks": {k: asdict(v) for k, v in spec.benchmarks.items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]


def test_spec_attributes_and_evaluation_load_and_hash(tmp_path: Path) -> None:
    path = _write_spec(tmp_path, SPEC)
    spec = load_spec(path)
    assert spec.concepts["ruby"].attributes == {"shape": "circle", "colour": "red", "texture": "striped"}
    assert spec.concepts["plain"].attributes == {}
    assert spec.evaluation.classifier == "builtin:toy-classifier" and spec.evaluation.clip_model is None
    # specs that use neither new field keep the hash they had
    for name in ("paper", "random"):
        shipped = load_spec(Path(__file__).resolve().parents[1] / "datasets" / f"{name}.yaml")
        assert not shipped.evaluation.is_set and shipped.spec_hash() == _old_hash(shipped)
    bare = copy.deepcopy(SPEC)
    del bare["evaluation"]
    for concept in bare["concepts"]:
        concept.pop("attributes", None)
    bare_spec = load_spec(_write_spec(tmp_path / "bare", bare))
    assert bare_spec.spec_hash() == _old_hash(bare_spec)
    # set, they count
    no_eval = copy.deepcopy(SPEC)
    del no_eval["evaluation"]
    hashes = {load_spec(_write_spec(tmp_path / n, d)).spec_hash() for n, d in
              (("a", SPEC), ("b", no_eval), ("c", bare), ("d", _with(evaluation={"clip_model": "builtin:toy-clip"})))}
    assert len(hashes) == 4
    # relative evaluation paths resolve against the spec's folder; builtin and absolute ones stay
    assert spec.resolve_ref("w/clip.safetensors") == str(tmp_path / "w/clip.safetensors")
    assert spec.resolve_ref("builtin:toy-clip") == "builtin:toy-clip"
    assert spec.resolve_ref("/abs/c.safetensors") == "/abs/c.safetensors"


@pytest.mark.parametrize(
    ("edit", "field", "expected"),
    [
        (lambda d: d["concepts"][0].update(attributes=["circle"]), "concepts[0].attributes", "a mapping"),
        (lambda d: d["concepts"][0].update(attributes={"shape": 3}), "concepts[0].attributes.shape",
         "a non-empty string"),
        (lambda d: d.update(evaluation={"clip": "x"}), "evaluation.clip", "one of the known keys"),
        (lambda d: d.update(evaluation={"clip_weights": 5}), "evaluation.clip_weights", "a CLIP weights file"),
        (lambda d: d.update(evaluation="builtin:toy-clip"), "evaluation", "a mapping"),
    ],
)
def test_bad_attributes_and_evaluation(tmp_path: Path, edit: Any, field: str, expected: str) -> None:
    data = copy.deepcopy(SPEC)
    edit(data)
    path = _write_spec(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)
    assert expected in str(info.value)


# -- defaults from the spec ---------------------------------------------------------------------------


def test_clip_choice_and_default_metrics(tmp_path: Path) -> None:
    plain = load_spec(_write_spec(tmp_path / "p", _with(evaluation=None)))
    toy = load_spec(_write_spec(tmp_path / "t", _with(evaluation={
        "clip_model": "builtin:toy-clip", "clip_weights": "w/clip.safetensors", "classifier": "builtin:toy-classifier"
    })))
    assert clip_choice(plain) == (RANDOM_CLIP, None)
    assert clip_choice(toy) == (TOY_CLIP, str(tmp_path / "t" / "w/clip.safetensors"))
    assert clip_choice(toy, "ViT-B-32") == ("ViT-B-32", None)  # the spec's weights belong to the spec's model
    assert clip_choice(toy, None, "mine.pt") == (TOY_CLIP, "mine.pt")
    assert clip_choice(plain, None, "mine.pt") == (RANDOM_CLIP, "mine.pt")
    four = ("clip_i", "clip_t", "clip_i@official", "clip_t@official")
    assert default_metrics(plain) == four
    assert default_metrics(toy) == (*four, "vanishing", "confusion")


# -- the rules, with a stub classifier ----------------------------------------------------------------


def test_rows_follow_the_rules_on_hand_built_images(tmp_path: Path) -> None:
    path = _write_spec(tmp_path, SPEC)
    spec = load_spec(path)
    scene = spec.scenes["quad"]
    first = render([_obj("circle", "red", PIXEL_BOXES["tl"]), _obj("square", "red", PIXEL_BOXES["tr"])], "white")
    second = render([_obj("circle", "green", PIXEL_BOXES["tl"]), _obj("circle", "green", PIXEL_BOXES["tr"]),
                     _obj("triangle", "purple", PIXEL_BOXES["bl"])], "white")
    readings = [
        # ruby: itself; jade: a red square (ruby's colour); amber: nothing there
        [("circle", "red", "striped"), ("square", "red", "dotted"), ("none", "blue", "solid")],
        # ruby: a green circle (jade's colour); jade: a green circle (ruby's shape); amber: a purple triangle
        [("circle", "green", "striped"), ("circle", "green", "dotted"), ("triangle", "purple", "solid")],
    ]
    items = [ScoreItem("m", scene, 0, 0, first), ScoreItem("m", scene, 1, 1, second)]
    results = {}
    for metric in ("vanishing", "confusion"):
        stub = StubClassifier(readings)
        results[metric] = _scores(metric, items, _context(path, stub))
        # the 'plain' region (no attributes) is never classified; boxes are pixel xyxy of the 64x64 image
        assert [boxes for _, boxes in stub.calls] == [[PIXEL_BOXES[q] for q in ("tl", "tr", "bl")]] * 2
        assert stub.calls[0][0] is first and stub.calls[1][0] is second
    expected = {"vanishing": [[0, 1, 1], [1, 1, 1]], "confusion": [[0, 1, 0], [1, 1, 0]]}
    for metric, rows in results.items():
        assert [[r["value"] for r in item] for item in rows] == expected[metric]
        assert [[(r["concept"], r["region"]) for r in item] for item in rows] == [
            [("ruby", 0), ("jade", 1), ("amber", 2)]
        ] * 2
    assert [r["predicted"] for r in results["vanishing"][0]] == ["red striped circle", "red dotted square", "none"]
    assert results["confusion"][1][2]["predicted"] == "purple solid triangle"


def test_wide_scene_boxes_and_own_attributes_only(tmp_path: Path) -> None:
    data = copy.deepcopy(SPEC)
    data["concepts"][1]["attributes"] = {"shape": "square"}  # jade declares no colour
    path = _write_spec(tmp_path, data)
    spec = load_spec(path)
    image = Image.new("RGB", (128, 64), (238, 238, 238))
    # ruby reads as itself; jade's box shows ruby's colour, which jade does not declare: no confusion
    stub = StubClassifier([[("circle", "red", "solid"), ("square", "red", "solid")]] * 2)
    ctx = _context(path, stub)
    item = ScoreItem("m", spec.scenes["wide"], 0, 0, image)
    assert [r["value"] for r in _scores("confusion", [item], ctx)[0]] == [0.0, 0.0]
    assert [r["value"] for r in _scores("vanishing", [item], ctx)[0]] == [0.0, 0.0]
    # [0, 0.25, 0.25, 0.75] and [0.5, 0, 1, 1] of a 128 x 64 image
    assert stub.calls[0][1] == [(0, 16, 32, 48), (64, 0, 128, 64)]


# -- real renders, a fake classifier that reads the pixels --------------------------------------------


def _pixel_classifier(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> list[BoxPrediction]:
    """Colour: nearest world colour to the median foreground pixel; shape: circle if it fills > 2/3 of the box."""
    white = PLAIN_BACKGROUNDS["white"]
    out = []
    for box in boxes:
        pixels = np.asarray(image.crop(box), dtype=np.float64).reshape(-1, 3)
        foreground = pixels[np.abs(pixels - white).sum(axis=1) > 60]
        fill = len(foreground) / len(pixels)
        if fill < 0.1:
            out.append(BoxPrediction("none", "red", "solid", 1.0))
            continue
        median = np.median(foreground, axis=0)
        colour = min(COLOURS, key=lambda c: float(np.sum((np.array(COLOURS[c]) - median) ** 2)))
        out.append(BoxPrediction("circle" if fill > 2 / 3 else "square", colour, "solid", 1.0))
    return out


def test_real_renders_with_a_pixel_reading_classifier(tmp_path: Path) -> None:
    data = copy.deepcopy(SPEC)
    data["concepts"] = [_concept("rosy", "circle", "red"), _concept("leaf", "square", "green"),
                        _concept("sun", "circle", "yellow")]
    data["scenes"] = [{"id": "quad", "prompt": "things", "width": 64, "height": 64,
                       "regions": [_region("rosy", QUADRANTS["tl"]), _region("leaf", QUADRANTS["tr"]),
                                   _region("sun", QUADRANTS["bl"]), _region("rosy", QUADRANTS["br"])]}]
    path = _write_spec(tmp_path, data)
    spec = load_spec(path)
    # rosy itself; leaf painted in rosy's red; sun missing; the second rosy painted in sun's yellow
    image = render([_obj("circle", "red", PIXEL_BOXES["tl"]), _obj("square", "red", PIXEL_BOXES["tr"]),
                    _obj("circle", "yellow", PIXEL_BOXES["br"])], "white")
    item = ScoreItem("m", spec.scenes["quad"], 0, 0, image)
    ctx = _context(path, _pixel_classifier)
    vanishing = _scores("vanishing", [item], ctx)[0]
    confusion = _scores("confusion", [item], ctx)[0]
    assert [r["predicted"] for r in vanishing] == ["red solid circle", "red solid square", "none",
                                                   "yellow solid circle"]
    assert [r["value"] for r in vanishing] == [0.0, 1.0, 1.0, 1.0]
    assert [r["value"] for r in confusion] == [0.0, 1.0, 0.0, 1.0]
    assert [r["concept"] for r in confusion] == ["rosy", "leaf", "sun", "rosy"]


# -- the protocol keeps the toy definitions ------------------------------------------------------------

TOY_SPEC = Path(__file__).resolve().parents[1] / "datasets" / "toy.yaml"


def _new_rows(metric: str, spec_path: Path, scene: Any, image: Image.Image, classify: Any) -> list[tuple]:
    ctx = _context(spec_path, classify)
    rows = _scores(metric, [ScoreItem("m", scene, 0, 0, image)], ctx)[0]
    return [(r["concept"], r["region"], r["value"], r["predicted"]) for r in rows]


def test_protocol_keeps_the_toy_definitions_on_every_reading(tmp_path: Path) -> None:
    """Every uniform reading and 40 mixed readings per scene, on this file's spec and on the toy benchmark."""
    rng = np.random.default_rng(0)
    readings = [(s, c, "striped") for s in SHAPE_LABELS for c in COLOURS]
    compared = 0
    for spec_path in (_write_spec(tmp_path, SPEC), TOY_SPEC):
        spec = load_spec(spec_path)
        for scene in spec.scenes.values():
            image = Image.new("RGB", (scene.width, scene.height))
            checked = [i for i, r in enumerate(scene.regions) if old_checked_attributes(spec.concepts[r.concept])]
            cases = [[r] * len(checked) for r in readings]
            cases += [[readings[k] for k in rng.integers(0, len(readings), len(checked))] for _ in range(40)]
            for case in cases:
                predictions = {i: BoxPrediction(*r, 0.9) for i, r in zip(checked, case, strict=True)}
                for metric in ("vanishing", "confusion"):
                    stub = StubClassifier([case])
                    assert _new_rows(metric, spec_path, scene, image, stub) == old_rows(spec, scene, predictions,
                                                                                          metric)
                    compared += 1
    assert compared == 2 * (len(readings) + 40) * (2 + 6)


def test_protocol_keeps_the_toy_results_on_real_renders() -> None:
    """The committed classifier on the toy oracle's perfect, swapped and blank renders: old and new rows agree."""
    from toyworld.classifier import toy_box_judge
    from toyworld.oracle import ToyOracle

    torch.set_num_threads(1)
    spec = load_spec(TOY_SPEC)
    judge, oracle = toy_box_judge(), ToyOracle()
    values = {"vanishing": [], "confusion": []}
    for scene in spec.scenes.values():
        ids = list(scene.concept_ids)
        for seed in range(2):
            images = [oracle.render(scene, [spec.concepts[c] for c in ids], seed),
                      oracle.render(scene, [spec.concepts[c] for c in ids[1:] + ids[:1]], seed),
                      oracle.blank(scene, seed)]
            for image in images:
                boxes = [to_xyxy_pixels(r.box, *image.size) for r in scene.regions]
                predictions = dict(enumerate(classify_boxes(judge.model, image, boxes)))
                for metric in values:
                    new = _new_rows(metric, TOY_SPEC, scene, image, judge.read)
                    assert new == old_rows(spec, scene, predictions, metric)
                    values[metric] += [row[2] for row in new]
    # the renders exercise both outcomes of both rates (the comparison is not vacuous)
    assert set(values["vanishing"]) == {0.0, 1.0} and set(values["confusion"]) == {0.0, 1.0}


# -- the real classifier code path, scoring, errors ---------------------------------------------------


def _save_classifier(path: Path, seed: int = 3) -> BoxClassifier:
    from toyworld.models import save_weights

    torch.manual_seed(seed)
    model = BoxClassifier().eval()
    save_weights(model, path)
    return model


def test_classifier_file_and_builtin_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toyworld.models

    torch.set_num_threads(1)
    path = _write_spec(tmp_path, _with(evaluation={"classifier": "clf/box.safetensors"}))
    model = _save_classifier(tmp_path / "clf" / "box.safetensors")
    spec = load_spec(path)
    image = render([_obj("circle", "red", PIXEL_BOXES["tl"])], "gray")
    item = ScoreItem("m", spec.scenes["quad"], 0, 0, image)
    ctx = ScoreContext(spec, FolderReferences(tmp_path))
    metric = SPECS["vanishing"].create({})
    rows = metric.score([item], ctx)[0]
    # the same readings straight from toyworld.classifier, with the fp16-rounded weights
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    direct = classify_boxes(model, image, [PIXEL_BOXES[q] for q in ("tl", "tr", "bl")])
    assert [r["predicted"] for r in rows] == [describe(p) for p in direct]
    attributes = [("circle", "red"), ("square", "green"), ("triangle", "yellow")]
    assert [r["value"] for r in rows] == [
        float(p.shape == "none" or (p.shape, p.colour) != own) for p, own in zip(direct, attributes, strict=True)
    ]
    conventions = metric.conventions(ctx)
    # the spec's relative path, resolved against the spec's folder, is the file the scores were made with
    assert conventions["model"] == str(tmp_path / "clf" / "box.safetensors")
    assert conventions["crop_mode"] == "square around box, 32x32"
    assert conventions["weights"] == f"sha256:{file_hash(tmp_path / 'clf' / 'box.safetensors')}"

    # builtin:toy-classifier reads toyworld/weights/classifier.safetensors; missing, it names the script
    monkeypatch.setattr(toyworld.models, "WEIGHTS_DIR", tmp_path / "weights")
    builtin = load_spec(_write_spec(tmp_path, SPEC, "builtin.yaml"))
    with pytest.raises(FileNotFoundError, match="python -m toytrain classifier") as info:
        ScoreContext(builtin, FolderReferences(tmp_path)).box_judge()
    assert str(tmp_path / "weights" / "classifier.safetensors") in str(info.value)
    _save_classifier(tmp_path / "weights" / "classifier.safetensors")
    loaded = ScoreContext(builtin, FolderReferences(tmp_path)).box_judge()
    assert loaded.ref == "builtin:toy-classifier"
    assert loaded.weights == f"sha256:{file_hash(tmp_path / 'weights' / 'classifier.safetensors')}"
    assert [describe(p) for p in loaded.read(image, [PIXEL_BOXES["tl"]])] == [rows[0]["predicted"]]
    bad = load_spec(_write_spec(tmp_path, _with(evaluation={"classifier": "builtin:resnet"}), "bad.yaml"))
    with pytest.raises(ValueError, match="evaluation.classifier': unknown built-in box_judge 'builtin:resnet'"):
        ScoreContext(bad, FolderReferences(tmp_path)).box_judge()


def _make_run(root: Path, data: dict) -> Path:
    """A run of one method over the 'quad' scene (two seeds) with references for CLIP-I."""
    spec_path = _write_spec(root, data)
    spec = load_spec(spec_path)
    for k, concept in enumerate(spec.concepts):
        (root / "refs" / concept).mkdir(parents=True)
        noise_image(k, (32, 32), (200, 100, 100)).save(root / "refs" / concept / "a.png")
    store = RunStore(root / "run")
    store.write_spec(resolved_document(spec, root))
    store.write_manifest({"format": "lcbench-run/1",
                          "dataset": {"name": spec.name, "path": str(spec_path), "spec_hash": spec.spec_hash()},
                          "scenes": list(spec.scenes), "seeds": 2, "seed_scheme": "paper",
                          "methods": {"m": {"name": "m", "params": {}, "description": "m"}}})
    images = [render([_obj("circle", "red", PIXEL_BOXES["tl"])], "white"), render([], "white")]
    for index, image in enumerate(images):
        store.write_item(ItemKey("m", "quad", index), index, image, {"status": "ok"})
    return root / "run"


def test_score_run_defaults_add_the_classifier_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    run = _make_run(tmp_path, _with(scenes=SPEC["scenes"][:1]))
    readings = [[("circle", "red", "striped"), ("none", "red", "solid"), ("none", "red", "solid")],
                [("none", "red", "solid")] * 3]
    stub = StubClassifier(readings * 2)  # both images, for vanishing and then for confusion
    monkeypatch.setattr(ScoreContext, "box_judge", lambda self: StubJudge(stub))
    out = score_run(run, references=FolderReferences(tmp_path), quiet=True)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(
        ["clip_i", "clip_t", "clip_i@official", "clip_t@official", "vanishing", "confusion"]
    )
    rows = json.loads((out / "vanishing/items/m/quad/000.json").read_text())["rows"]
    assert [(r["concept"], r["value"], r["predicted"]) for r in rows] == [
        ("ruby", 0.0, "red striped circle"), ("jade", 1.0, "none"), ("amber", 1.0, "none")
    ]
    conventions = json.loads((out / "vanishing/conventions.json").read_text())
    assert conventions["kind"] == "V" and conventions["model"] == "builtin:toy-classifier"
    assert json.loads((out / "confusion/conventions.json").read_text())["kind"] == "C"
    assert len(stub.calls) == 2  # one call per image: vanishing and confusion share the judge's verdicts


def test_scoring_without_a_classifier_is_one_clear_error(tmp_path: Path) -> None:
    run = _make_run(tmp_path, _with(evaluation=None))
    with pytest.raises(ValueError, match=r"(boxes\.yaml|spec\.json): field 'evaluation.classifier': expected a per"):
        score_run(run, ["clip_t", "vanishing"], references=FolderReferences(tmp_path), quiet=True)
    assert not (run / "scores" / "vanishing").exists()


# -- toy CLIP -----------------------------------------------------------------------------------------


def _save_toy_clip(path: Path) -> dict[str, torch.Tensor]:
    import open_clip
    from safetensors.torch import save_file

    config = CLIP_CONFIG
    open_clip.add_model_config(config)
    torch.manual_seed(1234)  # not the embedder's seed 0: loading must replace the random init
    state = {k: v.half().contiguous() for k, v in open_clip.create_model(config.stem).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


def test_toy_clip_loads_safetensors_and_fingerprints_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toyworld.clip

    torch.set_num_threads(1)
    assert CLIP_CONFIG.name == "lcbench_toy_clip.json"
    weights = tmp_path / "weights" / "clip.safetensors"
    monkeypatch.setattr(toyworld.clip, "CLIP_WEIGHTS", weights)
    with pytest.raises(ModelError, match="python -m toytrain clip") as info:
        ClipEmbedder(TOY_CLIP)
    assert str(weights) in str(info.value)
    state = _save_toy_clip(weights)
    clip = ClipEmbedder(TOY_CLIP)
    loaded = clip.model.state_dict()
    for key in ("visual.conv1.weight", "text_projection", "logit_scale"):
        assert torch.equal(loaded[key], state[key].float()), key
    assert clip.weights == f"sha256:{file_hash(weights)}" and file_hash(weights) in clip.fingerprint
    embedding = clip.embed_images([Image.new("RGB", (64, 64), (200, 30, 30))])
    assert embedding.shape[0] == 1 and float(embedding.norm()) == pytest.approx(1.0, abs=1e-5)

    # bench score: the spec's evaluation section picks toy CLIP and its weights (relative to the spec)
    monkeypatch.undo()  # the default weights file is not the one the spec names
    data = _with(evaluation={"clip_model": "builtin:toy-clip", "clip_weights": "weights/clip.safetensors"})
    run = _make_run(tmp_path, data)
    assert main(["--quiet", "score", str(run), "--metrics", "clip_t"]) == 0
    conventions = json.loads((run / "scores/clip_t/conventions.json").read_text())
    assert conventions["model"] == TOY_CLIP and conventions["weights"] == f"sha256:{file_hash(weights)}"
