"""The built-in metrics, registered through the same hook as third-party ones.

Names say what they compute; ``@official`` variants reproduce the Mix-of-Show / LoRA-Composer
evaluation scripts (anchors.md §0.1, §1.2) so that published numbers can be checked. ``vanishing`` and
``confusion`` need a per-box classifier named by the dataset (``evaluation.classifier``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.hookspecs import hookimpl
from metrics.api import MetricSpec
from metrics.box_concepts import BoxConceptMetric
from metrics.similarity import ImageSimilarity, TextAlignment

OFFICIAL_PREFIX = "A photo depicts "


def _image(name: str, backbone: str) -> Any:
    return lambda params: ImageSimilarity(name, params, backbone)


def _text(name: str) -> Any:
    return lambda params: TextAlignment(name, params)


def builtin_metrics() -> list[MetricSpec]:
    """CLIP-I, CLIP-T (default and official variants), DINO, vanishing and confusion."""
    image_defaults: Mapping[str, Any] = {
        "crop_mode": "pad_square",
        "pairing": "all_pairs",
        "scale": 1.0,
        "clip0": False,
    }
    text_defaults: Mapping[str, Any] = {
        "crop_mode": "pad_square",
        "prefix": "",
        "scale": 1.0,
        "clip0": False,
        "view": "crop",
    }
    return [
        MetricSpec(
            "clip_i",
            "CLIP image similarity of each box crop (whole image for the background) to the "
            "concept's references: raw cosine, mean over all (crop, reference) pairs",
            _image("clip_i", "clip"),
            image_defaults,
        ),
        MetricSpec(
            "clip_i@official",
            "CLIP-I as the official Mix-of-Show / LoRA-Composer script computes it: "
            "resize + center crop, max(cos, 0), against the first reference in sorted file-name order only",
            _image("clip_i@official", "clip"),
            {"crop_mode": "center_crop", "pairing": "first_ref", "scale": 1.0, "clip0": True},
        ),
        MetricSpec(
            "clip_t",
            "CLIP text similarity of each box crop to its region prompt with concept tokens "
            "replaced by class names: raw cosine, no prefix",
            _text("clip_t"),
            text_defaults,
        ),
        MetricSpec(
            "clip_t@official",
            "CLIP-T as the official scripts compute it (CLIPScore): prefix "
            f"'{OFFICIAL_PREFIX}', 2.5 * max(cos, 0), resize + center crop",
            _text("clip_t@official"),
            {
                "crop_mode": "center_crop",
                "prefix": OFFICIAL_PREFIX,
                "scale": 2.5,
                "clip0": True,
                "view": "crop",
            },
        ),
        MetricSpec(
            "dino",
            "DINOv2 CLS-token similarity of each box crop to the concept's references: raw cosine, "
            "mean over all pairs (as CustomConcept101 / DreamBench report DINO)",
            _image("dino", "dino"),
            {"crop_mode": "center_crop", "pairing": "all_pairs", "scale": 1.0, "clip0": False},
        ),
        MetricSpec(
            "vanishing",
            "concept vanishing: 1 per box whose classifier reading is empty or has a shape/colour other than "
            "the concept's attributes, else 0 (needs the dataset's evaluation.classifier)",
            lambda params: BoxConceptMetric("vanishing", "vanishing"),
        ),
        MetricSpec(
            "confusion",
            "concept confusion: 1 per box that shows a shape/colour of another concept of the scene which "
            "the box's own concept does not share, else 0 (needs the dataset's evaluation.classifier)",
            lambda params: BoxConceptMetric("confusion", "confusion"),
        ),
    ]


@hookimpl
def bench_metrics() -> list[MetricSpec]:
    """The built-in metric plugin."""
    return builtin_metrics()
