"""Box judges for real images: detectors (OWLv2, Grounding DINO), similarity, combined; ``--judge`` texts; errors.

The detectors are tiny random-weight models built from configs and saved as ``save_pretrained`` saves
the real ones (``tests/tiny_detectors.py``); the OWLv2 one can have its scores and boxes pinned so that
thresholds, the padding of non-square images and the overlap rules are checked against hand values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_detectors import OWL_PATCHES, owl_cell_box, save_tiny_dino, save_tiny_grounding_dino, save_tiny_owlv2

from bench.models import ModelError, create
from metrics.api import BoxQuery, BoxVerdict, ConceptCard, confused, vanished
from metrics.judges.combined import CombinedJudge
from metrics.judges.detectors import Detection, DetectorJudge, OpenVocabDetector, check_detector_folder, overlap
from metrics.judges.similarity import SimilarityJudge
from metrics.judges.spec import JudgeSpec, JudgeSpecError, build_judge, parse_judge


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def owl_on(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OWLv2 whose every patch box scores sigmoid(cos + 10) ~ 1 for every query."""
    return save_tiny_owlv2(tmp_path_factory.mktemp("owl_on"), logit_shift=10.0)


@pytest.fixture(scope="module")
def owl_mid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OWLv2 whose scores are sigmoid(cos) in [0.27, 0.73]."""
    return save_tiny_owlv2(tmp_path_factory.mktemp("owl_mid"), logit_shift=0.0)


def card(cid: str, class_name: str, refs: Sequence[Path] = ()) -> ConceptCard:
    return ConceptCard(cid, class_name, {}, lambda: list(refs))


def query(box: tuple[float, float, float, float], size: tuple[int, int], concept: ConceptCard,
          scene: Sequence[ConceptCard]) -> BoxQuery:
    w, h = size
    pixels = (round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))
    return BoxQuery(box, pixels, concept, tuple(scene))


# -- overlap rules and the detector judge's decisions (hand-made detections) ---------------------------


def test_overlap_rules_by_hand() -> None:
    det, box = (0, 0, 10, 10), (5, 0, 25, 10)  # intersection 50, detection 100, box 200, union 250
    assert overlap(det, box, "inside") == pytest.approx(0.5)
    assert overlap(det, box, "iou") == pytest.approx(50 / 250)
    assert overlap((30, 30, 40, 40), box, "inside") == 0.0
    assert overlap((2, 2, 2, 8), box, "iou") == 0.0  # a degenerate detection overlaps nothing
    with pytest.raises(ValueError, match="overlap rule: expected one of"):
        overlap(det, box, "area")


class FixedDetector:
    """A detector returning preset detections; records the labels and query template it was asked for."""

    kind, folder, weights, preprocess = "owlv2", Path("fixed"), "sha256:fixed", "none"

    def __init__(self, detections: list[Detection]):
        self.detections, self.calls = detections, []

    def detect(self, image: Image.Image, labels: Sequence[str], template: str) -> list[Detection]:
        self.calls.append((list(labels), template))
        return [d for d in self.detections if d.label in labels]


def test_detector_judge_threshold_overlap_and_identity() -> None:
    cat, dog, cat2 = card("tom", "cat"), card("rex", "dog"), card("kitty", "cat")
    scene = [cat, dog, cat2]
    size = (100, 50)
    q_cat = query((0.0, 0.0, 0.5, 1.0), size, cat, scene)  # pixels (0, 0, 50, 50)
    q_dog = query((0.5, 0.0, 1.0, 1.0), size, dog, scene)  # pixels (50, 0, 100, 50)
    detections = [
        Detection("cat", 0.35, (5, 5, 45, 45)),  # inside the cat box
        Detection("dog", 0.9, (40, 5, 60, 45)),  # half in each box: inside 0.5 for both
        Detection("cat", 0.95, (60, 0, 100, 50)),  # a cat in the dog's box
    ]
    judge = DetectorJudge(FixedDetector(detections), threshold=0.3)
    image = Image.new("RGB", size)
    v_cat, v_dog = judge.judge(image, [q_cat, q_dog])
    assert judge.detector.calls == [(["cat", "dog"], "a photo of a {}")]  # class names once, default query
    assert (v_cat.present, v_cat.identity, v_cat.details["detection_score"]) == (True, "tom", 0.35)
    # the dog overlaps the dog box by exactly 0.5 (inside), so it counts
    assert (v_dog.present, v_dog.identity) == (True, "rex")
    strict = DetectorJudge(FixedDetector(detections), threshold=0.3, min_overlap=0.6)
    _, v_dog = strict.judge(image, [q_cat, q_dog])
    # no dog counts any more; a cat (another class of the scene) is in the box: the first cat concept in scene order
    assert (v_dog.present, v_dog.identity) == (False, "tom") and vanished(v_dog) and confused(v_dog, q_dog)
    high = DetectorJudge(FixedDetector(detections), threshold=0.4)
    v_cat, _ = high.judge(image, [q_cat, q_dog])
    # 0.35 < 0.4: the cat vanished (its best score is kept in the row); the dog straddling both boxes lies half
    # in the cat's box too (inside = 0.5), so the cat's box shows the dog
    assert (v_cat.present, v_cat.identity, v_cat.details["detection_score"]) == (False, "rex", 0.35)
    assert v_cat.reading == "no cat >= 0.4 (best 0.350); dog 0.900"
    v_cat, _ = DetectorJudge(FixedDetector(detections), threshold=0.4, min_overlap=0.6).judge(image, [q_cat, q_dog])
    assert (v_cat.present, v_cat.identity) == (False, None)  # the dog no longer counts there: nothing of the scene
    iou = DetectorJudge(FixedDetector(detections), threshold=0.3, overlap_rule="iou", min_overlap=0.5)
    v_cat, _ = iou.judge(image, [q_cat, q_dog])
    assert v_cat.present  # IoU of (5,5,45,45) with (0,0,50,50) = 1600 / 2500 = 0.64
    assert "score >= 0.3" in iou.presence_rule and "intersection over union with the box >= 0.5" in iou.presence_rule


def test_detector_judge_refuses_bad_settings() -> None:
    detector = FixedDetector([])
    with pytest.raises(ValueError, match="threshold: expected a score in"):
        DetectorJudge(detector, threshold=1.5)
    with pytest.raises(ValueError, match="overlap: expected one of"):
        DetectorJudge(detector, overlap_rule="centre")
    with pytest.raises(ValueError, match="query: expected a template with"):
        DetectorJudge(detector, query="a photo")


# -- the real detectors, tiny and random --------------------------------------------------------------


def test_owlv2_scores_boxes_padding_and_threshold(owl_on: Path, owl_mid: Path) -> None:
    detector = OpenVocabDetector("owlv2", owl_on)
    image = Image.new("RGB", (128, 64), (120, 60, 30))  # wide: OWLv2 pads it to 128 x 128 (bottom)
    found = detector.detect(image, ["cat", "dog"], "a photo of a {}")
    assert len(found) == 2 * OWL_PATCHES**2 and {d.label for d in found} == {"cat", "dog"}
    assert all(d.score > 0.99 for d in found)  # sigmoid(cos + 10)
    def clip(box: Sequence[float]) -> tuple[float, ...]:  # into the 128 x 64 image
        return tuple(min(max(v, 0.0), 128.0 if k % 2 == 0 else 64.0) for k, v in enumerate(box))

    expected = {tuple(round(v) for v in clip(owl_cell_box(col, row, 128.0)))  # the padded square's side
                for row in range(OWL_PATCHES) for col in range(OWL_PATCHES)}
    assert {tuple(round(v) for v in d.box) for d in found if d.label == "cat"} == expected
    assert (16, 16, 48, 48) in expected and (16, 48, 48, 64) in expected  # row 1 is cut by the image's bottom
    # the processor's own post-processing gives the same boxes for a single query
    inputs = detector.processor(text=[["a photo of a cat"]], images=image, return_tensors="pt", truncation=True)
    with torch.no_grad():
        outputs = detector.model(**inputs)
    theirs = detector.processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=[(64, 128)])
    mine = sorted(tuple(round(v, 3) for v in d.box) for d in found if d.label == "cat")
    theirs_clipped = sorted(tuple(round(v, 3) for v in clip(b)) for b in theirs[0]["boxes"].tolist())
    np.testing.assert_allclose(np.array(mine), np.array(theirs_clipped), atol=1e-3)

    # scores sigmoid(cos) lie in (0.26, 0.74): a threshold above finds nothing, one below finds every box
    mid = OpenVocabDetector("owlv2", owl_mid)
    scores = [d.score for d in mid.detect(image, ["cat"], "a photo of a {}")]
    assert 1 / (1 + math.e) - 1e-6 <= min(scores) and max(scores) <= 1 / (1 + math.exp(-1)) + 1e-6
    cat = card("tom", "cat")
    q = query((0.0, 0.0, 0.5, 1.0), image.size, cat, [cat])
    assert DetectorJudge(mid, threshold=0.75).judge(image, [q])[0].present is False
    assert DetectorJudge(mid, threshold=0.25).judge(image, [q])[0].present is True


def test_grounding_dino_wiring(tmp_path: Path) -> None:
    folder = save_tiny_grounding_dino(tmp_path / "gdino")
    judge = create("builtin:grounding-dino", "box_judge", weights=str(folder), threshold=0.0)
    image = Image.new("RGB", (96, 64), (30, 90, 200))
    found = judge.detector.detect(image, ["cat", "dog"], "{}.")
    assert {d.label for d in found} == {"cat", "dog"} and len(found) == 2 * 10  # 10 queries per prompt
    assert all(0 <= d.box[0] <= d.box[2] <= 96 and 0 <= d.box[1] <= d.box[3] <= 64 for d in found)
    assert all(0.0 <= d.score <= 1.0 for d in found)
    # scores and boxes are what the processor's own post-processing gives for the same prompt
    detector = judge.detector
    mine = detector.detect(image, ["cat"], "{}.")
    inputs = detector.processor(images=[image], text=["cat."], return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    theirs = detector.processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[(64, 96)])[0]
    np.testing.assert_allclose([d.score for d in mine], theirs["scores"].tolist(), atol=1e-5)
    clipped = theirs["boxes"].clamp(min=0).minimum(torch.tensor([96.0, 64.0, 96.0, 64.0]))
    np.testing.assert_allclose([d.box for d in mine], clipped.tolist(), atol=1e-3)
    cat, dog = card("tom", "cat"), card("rex", "dog")
    verdicts = judge.judge(image, [query((0, 0, 0.5, 1), image.size, cat, [cat, dog]),
                                   query((0.5, 0, 1, 1), image.size, dog, [cat, dog])])
    assert all(isinstance(v, BoxVerdict) for v in verdicts)
    assert judge.ref == f"grounding-dino:{folder}" and judge.weights.startswith("sha256:")
    assert "grounding-dino detects the concept's class name (query '{}.')" in judge.presence_rule


# -- errors for missing weights -----------------------------------------------------------------------


def test_missing_detector_files_name_the_file_and_what_goes_there(tmp_path: Path, owl_on: Path) -> None:
    with pytest.raises(ModelError, match="does not exist; expected a local folder holding a Owlv2ForObjectDetection"):
        check_detector_folder("owlv2", tmp_path / "nowhere", "--judge")
    with pytest.raises(ModelError, match="looks like a hub id; the bench never downloads"):
        check_detector_folder("owlv2", "google/owlv2-base-patch16-ensemble", "--judge")
    folder = tmp_path / "partial"
    folder.mkdir()
    with pytest.raises(ModelError, match=r"partial': config.json is missing"):
        check_detector_folder("grounding-dino", folder, "--judge")
    (folder / "config.json").write_text((owl_on / "config.json").read_text())
    with pytest.raises(ModelError, match=r"no model weights \(\*.safetensors or \*.bin\)"):
        check_detector_folder("owlv2", folder, "--judge")
    (folder / "model.safetensors").write_bytes((owl_on / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match=r"preprocessor_config.json \(the processor\) is missing") as info:
        check_detector_folder("owlv2", folder, "--judge")
    assert "IDEA-Research" not in str(info.value) and "google/owlv2-base-patch16-ensemble" in str(info.value)
    with pytest.raises(ModelError, match="builtin:owlv2: owlv2 detector: no folder given"):
        create("builtin:owlv2", "box_judge")
    with pytest.raises(ModelError, match="expected an embedder: use `bench score RUN --judge identity=dino:DIR`"):
        create("builtin:dino-similarity", "box_judge")


# -- similarity judge ---------------------------------------------------------------------------------


class ColourEmbedder:
    """Embeds an image as its normalised mean RGB: similarities are known by hand."""

    name, weights, preprocess_desc = "mean-rgb", "none", "mean colour"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        self.seen.extend(im.size for im in images)
        rows = [torch.tensor(im.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)), dtype=torch.float)
                for im in images]
        return torch.nn.functional.normalize(torch.stack(rows) + 1e-3, dim=-1)


def _refs(tmp_path: Path, name: str, colours: Sequence[tuple[int, int, int]]) -> list[Path]:
    paths = []
    for k, colour in enumerate(colours):
        path = tmp_path / name / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), colour).save(path)
        paths.append(path)
    return paths


def test_similarity_judge_winner_margin_and_floor(tmp_path: Path) -> None:
    red = card("ruby", "circle", _refs(tmp_path, "ruby", [(255, 0, 0), (255, 0, 0)]))
    green = card("jade", "square", _refs(tmp_path, "jade", [(0, 255, 0)]))
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((200, 200, 0), (32, 0, 64, 32))  # the right half: yellowish, between red and green
    scene = [red, green]
    q_left = query((0, 0, 0.5, 1), image.size, red, scene)
    q_right = query((0.5, 0, 1, 1), image.size, green, scene)
    embedder = ColourEmbedder()
    judge = SimilarityJudge(embedder, "colour")
    left, right = judge.judge(image, [q_left, q_right])
    assert (left.present, left.identity) == (True, "ruby")
    # right box: cos((200,200,0), red) = cos((200,200,0), green) = 1/sqrt(2): a tie, so the own concept stays
    assert right.details["similarity"] == pytest.approx(1 / math.sqrt(2), abs=1e-3)
    assert right.details["rival_similarity"] == pytest.approx(1 / math.sqrt(2), abs=1e-3)
    assert (right.present, right.identity) == (True, "jade")
    image.paste((230, 170, 0), (32, 0, 64, 32))  # now redder: ruby wins by cos difference
    right = judge.judge(image, [q_left, q_right])[1]
    gap = right.details["rival_similarity"] - right.details["similarity"]
    assert gap > 0.1 and (right.present, right.identity) == (False, "ruby") and confused(right, q_right)
    assert right.details["margin"] == pytest.approx(-gap)
    assert SimilarityJudge(embedder, "colour", margin=gap + 0.01).judge(image, [q_right])[0].identity == "jade"
    assert SimilarityJudge(embedder, "colour", margin=gap - 0.01).judge(image, [q_right])[0].identity == "ruby"
    # a blue box resembles neither; with a floor above its best similarity it shows none of them
    image.paste((0, 0, 255), (32, 0, 64, 32))
    floored = SimilarityJudge(embedder, "colour", min_similarity=0.5).judge(image, [q_right])[0]
    assert (floored.present, floored.identity) == (False, None) and vanished(floored) and not confused(floored, q_right)
    # references are embedded once per file: 3 files, then only crops
    embedder.seen.clear()
    judge.judge(image, [q_left, q_right])
    assert embedder.seen == [(32, 32), (32, 32)]  # center_crop keeps the box as cut (the model crops later)
    with pytest.raises(FileNotFoundError, match="concept 'nobody': expected reference images"):
        judge.judge(image, [query((0, 0, 1, 1), image.size, card("nobody", "thing"), [card("nobody", "thing")])])


def test_similarity_equals_the_dino_metric_on_the_same_crop(tmp_path: Path) -> None:
    """The judge's own-concept similarity is the ``dino`` metric's value of that box (all pairs, center crop)."""
    from test_metrics_fixtures import FolderReferences, noise_image

    from bench.spec import load_spec
    from metrics.api import ScoreItem
    from metrics.box_concepts import scene_queries
    from metrics.context import ScoreContext
    from metrics.plugin import builtin_metrics

    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(
        "name: s\nconcepts:\n"
        "  - {id: a, class_name: cat, style: real, tokens: <a1> <a2>, lora: a.pt, references: refs/a}\n"
        "  - {id: b, class_name: dog, style: real, tokens: <b1> <b2>, lora: b.pt, references: refs/b}\n"
        "scenes:\n  - {id: ab, prompt: x, width: 96, height: 64, regions: ["
        "{concept: a, box: [0, 0, 0.5, 1], prompt: a <a1> <a2>}, "
        "{concept: b, box: [0.5, 0.25, 1, 1], prompt: b <b1> <b2>}]}\n"
    )
    for k, cid in enumerate("ab"):
        (tmp_path / "refs" / cid).mkdir(parents=True)
        for r in range(2):
            noise_image(10 * k + r, (40, 48)).save(tmp_path / "refs" / cid / f"{r}.png")
    spec = load_spec(spec_path)
    ctx = ScoreContext(spec, FolderReferences(tmp_path))
    item = ScoreItem("m", spec.scenes["ab"], 0, 0, noise_image(7, (96, 64)))
    dino = {m.name: m for m in builtin_metrics()}["dino"].create({"crop_mode": "center_crop", "pairing": "all_pairs",
                                                                    "scale": 1.0, "clip0": False})
    expected = [row["value"] for row in dino.score([item], ctx)[0]]
    judge = create("builtin:dino-similarity", "box_judge", embedder=ctx.dino())
    verdicts = judge.judge(item.image, [q for _, q in scene_queries(ctx, item.scene, item.image.size)])
    assert [v.details["similarity"] for v in verdicts] == pytest.approx(expected, abs=1e-5)
    assert judge.ref == "dino-similarity:dinov2:builtin:random-dino" and judge.weights == "random-init seed 0"


# -- combined -----------------------------------------------------------------------------------------


class Preset:
    """A judge with preset verdicts."""

    preprocess = crop = weights = "preset"

    def __init__(self, ref: str, verdicts: list[BoxVerdict | None]):
        self.ref, self.verdicts = ref, verdicts
        self.presence_rule, self.identity_rule = f"{ref} presence", f"{ref} identity"

    def judge(self, image: Image.Image, queries: Sequence[BoxQuery]) -> list[BoxVerdict | None]:
        return list(self.verdicts)


def test_combined_judge_confuses_only_present_boxes() -> None:
    a, b = card("a", "cat"), card("b", "cat")
    qs = [query((0, 0, 0.5, 1), (10, 10), a, [a, b])] * 4
    presence = Preset("det", [BoxVerdict(True, "a", "cat"), BoxVerdict(True, "a", "cat"),
                              BoxVerdict(False, None, "no cat"), None])
    identity = Preset("sim", [BoxVerdict(True, "a", "a", {"similarity": 0.9}), BoxVerdict(False, "b", "b"),
                              BoxVerdict(False, "b", "b"), BoxVerdict(True, "a", "a")])
    judge = CombinedJudge(presence, identity)
    out = judge.judge(Image.new("RGB", (10, 10)), qs)
    assert [(v.present, v.identity) if v else None for v in out] == [(True, "a"), (True, "b"), (False, None), None]
    assert [(vanished(v), confused(v, qs[0])) for v in out[:3]] == [(False, False), (False, True), (True, False)]
    assert out[0].details == {"similarity": 0.9} and out[0].reading == "cat; a"
    assert judge.presence_rule == "det presence"
    assert judge.identity_rule.startswith("when present: sim identity;")
    assert judge.ref == "presence det + identity sim"


# -- --judge texts ------------------------------------------------------------------------------------


def test_parse_judge_texts() -> None:
    assert parse_judge("builtin:toy-classifier") == JudgeSpec(ref="builtin:toy-classifier")
    spec = parse_judge("detector=owlv2:/m/owl,identity=dino:/m/dino,threshold=0.2,overlap=iou:0.4,margin=0.05,"
                       "query=a {} in a photo")
    assert (spec.detector, spec.detector_folder, spec.identity, spec.identity_folder) == (
        "owlv2", "/m/owl", "dino", "/m/dino")
    assert (spec.threshold, spec.overlap_rule, spec.min_overlap, spec.margin, spec.query) == (
        0.2, "iou", 0.4, 0.05, "a {} in a photo")
    assert parse_judge("identity=clip,min_similarity=0.5,crop=pad_square") == JudgeSpec(
        identity="clip", min_similarity=0.5, crop="pad_square")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("detector=yolo:/m", "expected KIND:DIR with KIND one of ['grounding-dino', 'owlv2']"),
        ("detector=owlv2", "expected KIND:DIR"),
        ("identity=clip:/m/clip.pt", "expected dino, dino:DIR or clip"),
        ("identity=dino,threshold=0.2", "'threshold' is a detector setting"),
        ("detector=owlv2:/m,margin=0.1", "'margin' is an identity setting"),
        ("detector=owlv2:/m,overlap=0.5", "expected RULE:FRACTION"),
        ("detector=owlv2:/m,threshold=high", "'threshold=high': expected a number"),
        ("threshold=0.2", "expected detector=KIND:DIR and/or identity"),
        ("detector=owlv2:/m,colour=red", "part 'colour=red': expected KEY=VALUE"),
        ("identity=dino,crop=mask_grey", "expected one of ['center_crop', 'pad_square']"),
    ],
)
def test_parse_judge_errors(text: str, message: str) -> None:
    with pytest.raises(JudgeSpecError, match="--judge") as info:
        parse_judge(text)
    assert message in str(info.value)


class Ctx:
    """The part of ScoreContext that build_judge uses."""

    device = "cpu"

    def __init__(self) -> None:
        from metrics.models import DinoEmbedder

        self._dino = DinoEmbedder()

    def dino(self) -> Any:
        return self._dino

    def clip(self) -> Any:
        raise AssertionError("not asked for")


def test_build_judge_combines_through_the_front_door(owl_on: Path, tmp_path: Path) -> None:
    dino = save_tiny_dino(tmp_path / "dino")
    judge = build_judge(f"detector=owlv2:{owl_on},identity=dino:{dino},threshold=0.2,margin=0.1", Ctx())
    assert isinstance(judge, CombinedJudge)
    assert judge.presence.threshold == 0.2 and judge.identity.margin == 0.1
    assert judge.identity.ref == f"dino-similarity:dinov2:{dino}" and judge.identity.weights.startswith("sha256:")
    assert build_judge("identity=dino", Ctx()).ref == "dino-similarity:dinov2:builtin:random-dino"
    with pytest.raises(ModelError, match="DINO model .*missing.*expected a local folder with config.json"):
        build_judge(f"identity=dino:{tmp_path / 'missing'}", Ctx())
    with pytest.raises(ModelError, match=r"--judge: builtin:owlv2: owlv2 detector folder '.*nowhere' does not exist"):
        build_judge(f"detector=owlv2:{tmp_path / 'nowhere'}", Ctx())
