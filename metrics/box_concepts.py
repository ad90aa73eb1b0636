"""Concept vanishing and concept confusion, read off each region's box by a per-box classifier.

The dataset names the classifier (``evaluation.classifier``) and every concept that should be checked
declares what the classifier ought to see (``attributes: {shape, colour, texture}``). For each region
of a scored image the classifier reads the box, and:

- ``vanishing`` is 1 when the concept is not in its box: nothing there (shape ``none``), or a shape or
  colour other than the concept's;
- ``confusion`` is 1 when the box shows a shape or colour of *another* concept of the same scene that
  differs from this concept's own value of that attribute (a leak of the neighbour). Only attributes
  the concept itself declares are compared; an empty box confuses nothing.

Regions whose concept is a background or declares neither shape nor colour get no row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from bench.boxes import to_xyxy_pixels
from bench.spec import Concept, DatasetSpec, Scene
from metrics.api import ScoreItem
from metrics.context import ScoreContext
from metrics.models import file_hash

TOY_CLASSIFIER = "builtin:toy-classifier"
CHECKED = ("shape", "colour")  # the attributes both metrics compare; texture is reported, not judged
NONE = "none"
CROP_DESCRIPTION = "square around box, 32x32"


class Prediction(Protocol):
    """What a classifier says about one box (``toyworld.classifier.BoxPrediction`` has this shape)."""

    shape: str
    colour: str
    texture: str


@dataclass(frozen=True)
class LoadedClassifier:
    """A ready per-box classifier: its spec reference, weights hash and ``classify(image, pixel_boxes)``."""

    ref: str
    weights: str
    classify: Callable[[Image.Image, list[tuple[int, int, int, int]]], Sequence[Prediction]]


def load_box_classifier(spec: DatasetSpec) -> LoadedClassifier:
    """The classifier named by ``spec.evaluation.classifier``: ``builtin:toy-classifier`` or a
    ``.safetensors`` file of ``toyworld.classifier.BoxClassifier`` weights (relative to the spec's folder)."""
    ref = spec.evaluation.classifier
    field = f"{spec.path}: field 'evaluation.classifier'"
    if ref is None:
        raise ValueError(
            f"{field}: expected a per-box classifier such as '{TOY_CLASSIFIER}' (the vanishing and confusion "
            "metrics need one; the spec has no evaluation.classifier)"
        )
    from toyworld import classifier as toy
    from toyworld.models import load_weights, weights_path

    if ref == TOY_CLASSIFIER:
        path = weights_path("classifier")
        model = toy.load_classifier()
    elif ref.startswith("builtin:") or not ref.endswith(".safetensors"):
        raise ValueError(f"{field}: expected '{TOY_CLASSIFIER}' or a .safetensors weights file (got {ref!r})")
    else:
        path = Path(spec.resolve_ref(ref))
        model = load_weights(toy.BoxClassifier(), path, "python -m toyworld.train classifier").eval()
    return LoadedClassifier(
        ref, f"sha256:{file_hash(path)}", lambda image, boxes: toy.classify_boxes(model, image, boxes)
    )


def describe(prediction: Prediction) -> str:
    """'red striped circle', or 'none' for an empty box."""
    if prediction.shape == NONE:
        return NONE
    return f"{prediction.colour} {prediction.texture} {prediction.shape}"


def checked_attributes(concept: Concept) -> dict[str, str]:
    """The concept's shape and colour (those it declares); empty for backgrounds."""
    if concept.background:
        return {}
    return {k: concept.attributes[k] for k in CHECKED if k in concept.attributes}


def vanished(prediction: Prediction, own: Mapping[str, str]) -> bool:
    """The concept is not in its box: nothing found, or a checked attribute differs from its own."""
    return prediction.shape == NONE or any(getattr(prediction, k) != v for k, v in own.items())


def confused(prediction: Prediction, own: Mapping[str, str], others: Sequence[Mapping[str, str]]) -> bool:
    """The box shows a shape or colour of another concept that this concept does not share."""
    if prediction.shape == NONE:
        return False
    return any(
        k in own and getattr(prediction, k) == theirs.get(k) != own[k] for theirs in others for k in CHECKED
    )


def judge(spec: DatasetSpec, scene: Scene, predictions: Mapping[int, Prediction], mode: str) -> list[dict[str, Any]]:
    """Rows of one image for ``mode`` ('vanishing' or 'confusion') from the predictions of its checked regions."""
    rows = []
    for index, prediction in predictions.items():
        concept_id = scene.regions[index].concept
        own = checked_attributes(spec.concepts[concept_id])
        if mode == "vanishing":
            value = vanished(prediction, own)
        else:
            others = [
                checked_attributes(spec.concepts[c]) for c in spec.scene_concepts(scene) if c != concept_id
            ]
            value = confused(prediction, own, others)
        rows.append({"concept": concept_id, "region": index, "value": float(value), "predicted": describe(prediction)})
    return rows


class BoxConceptMetric:
    """``vanishing`` (kind ``V``) or ``confusion`` (kind ``C``): a 0/1 row per checked region of each image."""

    def __init__(self, name: str, mode: str):
        if mode not in ("vanishing", "confusion"):
            raise ValueError(f"metric '{name}': mode: expected 'vanishing' or 'confusion' (got {mode!r})")
        self.name, self.mode = name, mode
        self.kind = "V" if mode == "vanishing" else "C"

    def conventions(self, ctx: ScoreContext) -> dict[str, Any]:
        """Classifier, weights hash, crop and decision rule of this score."""
        classifier = ctx.classifier()
        rule = (
            "1 if the box shows no object or a shape/colour other than the concept's attributes"
            if self.mode == "vanishing"
            else "1 if the box shows a shape/colour of another concept of the scene that the concept does not share"
        )
        return {
            "model": classifier.ref,
            "weights": classifier.weights,
            "preprocess": "RGB crop resized bilinear to 32x32, scaled to [-1, 1]",
            "crop_mode": CROP_DESCRIPTION,
            "scale": "n/a (0/1 per box; tables show the mean)",
            "clip0": "n/a",
            "prefix": None,
            "pairing": f"box prediction vs concept attributes ({', '.join(CHECKED)}): {rule}",
            "text": None,
        }

    def score(self, items: Sequence[ScoreItem], ctx: ScoreContext) -> list[list[dict[str, Any]]]:
        """One row per region whose concept declares a shape or colour; backgrounds get none."""
        classifier = ctx.classifier()
        out = []
        for item in items:
            checked = [
                i for i, r in enumerate(item.scene.regions) if checked_attributes(ctx.concept(r.concept))
            ]
            boxes = [to_xyxy_pixels(item.scene.regions[i].box, *item.image.size) for i in checked]
            predictions = classifier.classify(item.image, boxes) if boxes else []
            out.append(judge(ctx.spec, item.scene, dict(zip(checked, predictions, strict=True)), self.mode))
        return out
