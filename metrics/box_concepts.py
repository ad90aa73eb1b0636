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

from collections.abc import Mapping, Sequence
from typing import Any

from bench.boxes import to_xyxy_pixels
from bench.spec import Concept, DatasetSpec, Scene
from metrics.api import BoxJudge, BoxReading, ScoreItem
from metrics.context import ScoreContext

CHECKED = ("shape", "colour")  # the attributes both metrics compare; texture is reported, not judged
NONE = "none"


def describe(prediction: BoxReading) -> str:
    """'red striped circle', or 'none' for an empty box."""
    if prediction.shape == NONE:
        return NONE
    return f"{prediction.colour} {prediction.texture} {prediction.shape}"


def checked_attributes(concept: Concept) -> dict[str, str]:
    """The concept's shape and colour (those it declares); empty for backgrounds."""
    if concept.background:
        return {}
    return {k: concept.attributes[k] for k in CHECKED if k in concept.attributes}


def vanished(prediction: BoxReading, own: Mapping[str, str]) -> bool:
    """The concept is not in its box: nothing found, or a checked attribute differs from its own."""
    return prediction.shape == NONE or any(getattr(prediction, k) != v for k, v in own.items())


def confused(prediction: BoxReading, own: Mapping[str, str], others: Sequence[Mapping[str, str]]) -> bool:
    """The box shows a shape or colour of another concept that this concept does not share."""
    if prediction.shape == NONE:
        return False
    return any(
        k in own and getattr(prediction, k) == theirs.get(k) != own[k] for theirs in others for k in CHECKED
    )


def judge(spec: DatasetSpec, scene: Scene, predictions: Mapping[int, BoxReading], mode: str) -> list[dict[str, Any]]:
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
        judge: BoxJudge = ctx.box_judge()
        rule = (
            "1 if the box shows no object or a shape/colour other than the concept's attributes"
            if self.mode == "vanishing"
            else "1 if the box shows a shape/colour of another concept of the scene that the concept does not share"
        )
        return {
            "model": judge.ref,
            "weights": judge.weights,
            "preprocess": judge.preprocess,
            "crop_mode": judge.crop,
            "scale": "n/a (0/1 per box; tables show the mean)",
            "clip0": "n/a",
            "prefix": None,
            "pairing": f"box prediction vs concept attributes ({', '.join(CHECKED)}): {rule}",
            "text": None,
        }

    def score(self, items: Sequence[ScoreItem], ctx: ScoreContext) -> list[list[dict[str, Any]]]:
        """One row per region whose concept declares a shape or colour; backgrounds get none."""
        box_judge: BoxJudge = ctx.box_judge()
        out = []
        for item in items:
            checked = [
                i for i, r in enumerate(item.scene.regions) if checked_attributes(ctx.concept(r.concept))
            ]
            boxes = [to_xyxy_pixels(item.scene.regions[i].box, *item.image.size) for i in checked]
            predictions = box_judge.read(item.image, boxes) if boxes else []
            out.append(judge(ctx.spec, item.scene, dict(zip(checked, predictions, strict=True)), self.mode))
        return out
