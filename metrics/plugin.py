"""The built-in metrics, registered through the same hook as third-party ones.

Names say what they compute; ``@official`` variants reproduce the Mix-of-Show / LoRA-Composer
evaluation scripts (anchors.md §0.1, §1.2) so that published numbers can be checked. ``vanishing`` and
``confusion`` need a box judge: the dataset's (``evaluation.classifier``) or ``bench score --judge``
(a detector and/or a similarity judge, :mod:`metrics.judges`), which are registered here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.hookspecs import hookimpl
from bench.models import ModelSource
from metrics.api import MetricSpec

OFFICIAL_PREFIX = "A photo depicts "


def _image(name: str, backbone: str) -> Any:
    def create(params: Mapping[str, Any]) -> Any:
        from metrics.similarity import ImageSimilarity

        return ImageSimilarity(name, params, backbone)

    return create


def _text(name: str) -> Any:
    def create(params: Mapping[str, Any]) -> Any:
        from metrics.similarity import TextAlignment

        return TextAlignment(name, params)

    return create


def _box(name: str) -> Any:
    def create(params: Mapping[str, Any]) -> Any:
        from metrics.box_concepts import BoxConceptMetric

        return BoxConceptMetric(name, name)

    return create


def _judge_agreement(params: Mapping[str, Any]) -> Any:
    from metrics.box_concepts import JudgeAgreement

    return JudgeAgreement("judge_agreement")


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
            needs=("clip",),
        ),
        MetricSpec(
            "clip_i@official",
            "CLIP-I as the official Mix-of-Show / LoRA-Composer script computes it: "
            "resize + center crop, max(cos, 0), against the first reference in sorted file-name order only "
            "(upstream takes the first file os.listdir returns: unsorted filesystem order, image suffixes "
            "matched case-sensitively, so its 'first reference' can differ from ours)",
            _image("clip_i@official", "clip"),
            {"crop_mode": "center_crop", "pairing": "first_ref", "scale": 1.0, "clip0": True},
            needs=("clip",),
        ),
        MetricSpec(
            "clip_t",
            "CLIP text similarity of each box crop to its region prompt with concept tokens "
            "replaced by class names: raw cosine, no prefix",
            _text("clip_t"),
            text_defaults,
            needs=("clip",),
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
            needs=("clip",),
        ),
        MetricSpec(
            "dino",
            "DINOv2 CLS-token similarity of each box crop to the concept's references: raw cosine, "
            "mean over all pairs (as CustomConcept101 / DreamBench report DINO)",
            _image("dino", "dino"),
            {"crop_mode": "center_crop", "pairing": "all_pairs", "scale": 1.0, "clip0": False},
            needs=("dino",),
        ),
        MetricSpec(
            "vanishing",
            "concept vanishing: 1 per box where the box judge finds no object of the concept, else 0 (the "
            "dataset's evaluation.classifier, or bench score --judge; the conventions give the judge's rule)",
            _box("vanishing"),
            needs=("box_judge",),
            higher_is_better=False,
            percent=True,
            decimals=1,
        ),
        MetricSpec(
            "confusion",
            "concept confusion: 1 per box the box judge says shows another concept of the scene, else 0 (the "
            "dataset's evaluation.classifier, or bench score --judge; the conventions give the judge's rule)",
            _box("confusion"),
            needs=("box_judge",),
            higher_is_better=False,
            percent=True,
            decimals=1,
        ),
        MetricSpec(
            "judge_agreement",
            "box-judge check: 1 per box where the --judge and the dataset's evaluation.classifier give the same "
            "vanishing and confusion verdicts, else 0 (a check of the judge, not a score of the methods)",
            _judge_agreement,
            needs=("box_judge", "dataset_judge"),
            percent=True,
            decimals=1,
            calibrated=False,
        ),
    ]


@hookimpl
def bench_metrics() -> list[MetricSpec]:
    """The built-in metric plugin."""
    return builtin_metrics()


def _clip_loader(ref: str, **options: Any) -> Any:
    from metrics.models import load_open_clip

    return load_open_clip(ref, **options)


def _dino_loader(ref: str, **options: Any) -> Any:
    from metrics.models import load_dino_folder

    return load_dino_folder(ref, **options)


def _detector(kind: str) -> Any:
    def build(**options: Any) -> Any:
        from metrics.judges.detectors import detector_judge

        return detector_judge(kind, **options)

    return build


def _similarity(backbone: str) -> Any:
    def build(**options: Any) -> Any:
        from metrics.judges.similarity import similarity_judge

        return similarity_judge(backbone, **options)

    return build


@hookimpl
def bench_models() -> list[ModelSource]:
    """Loaders of local scoring models (open_clip CLIPs, DINOv2 folders) and the box judges for real images."""
    return [
        ModelSource("clip", _clip_loader, description="an open_clip model name with a local weights file"),
        ModelSource("dino", _dino_loader, description="a local DINOv2 folder (save_pretrained layout)"),
        ModelSource("box_judge", _detector("owlv2"), "owlv2",
                    "presence by OWLv2 detection of the class name (weights=local model+processor folder)"),
        ModelSource("box_judge", _detector("grounding-dino"), "grounding-dino",
                    "presence by Grounding DINO detection of the class name (weights=local model+processor folder)"),
        ModelSource("box_judge", _similarity("dino"), "dino-similarity",
                    "identity by DINOv2 similarity of the box to each scene concept's references (embedder=...)"),
        ModelSource("box_judge", _similarity("clip"), "clip-similarity",
                    "identity by CLIP similarity of the box to each scene concept's references (embedder=...)"),
    ]
