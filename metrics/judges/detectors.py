"""Presence by open-vocabulary detection: OWLv2 or Grounding DINO, transformers' own classes, from a local folder.

The detector runs once per image on the whole image, queried with the class name of each concept of
the scene (``query`` template, e.g. ``"a photo of a {}"``). A box holds an object of its concept's class
when some detection of that class has a score of at least ``threshold`` and overlaps the box by the
overlap rule:

- ``inside``: area(detection ∩ box) / area(detection) >= ``min_overlap`` (the detected object lies mostly
  in the box; an object smaller than its box still counts);
- ``iou``: area(detection ∩ box) / area(detection ∪ box) >= ``min_overlap``.

Scores: OWLv2's per-query ``sigmoid(logit)`` of each image patch's box, boxes scaled back through the
square padding OWLv2's processor adds (bottom/right); Grounding DINO's score as its
``post_process_grounded_object_detection`` computes it (max over the prompt's tokens of ``sigmoid(logit)``),
one prompt per class. Boxes are clipped to the image. The folder is what ``save_pretrained`` writes for the
model *and* its processor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.models import ModelError, looks_like_hub_id
from metrics.box_judge import BoxQuery, BoxVerdict, ConceptCard

# kind -> (model class, processor class, hub id users download, default threshold, default query template)
DETECTORS: dict[str, tuple[str, str, str, float, str]] = {
    "owlv2": ("Owlv2ForObjectDetection", "Owlv2Processor", "google/owlv2-base-patch16-ensemble", 0.1,
              "a photo of a {}"),
    "grounding-dino": ("GroundingDinoForObjectDetection", "GroundingDinoProcessor", "IDEA-Research/grounding-dino-tiny",
                       0.3, "{}."),
}
OVERLAP_RULES = ("inside", "iou")
DEFAULT_OVERLAP = ("inside", 0.5)
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


@dataclass(frozen=True)
class Detection:
    """One detected box: the class it was queried for, its score, its pixel box ``(x0, y0, x1, y1)``."""

    label: str
    score: float
    box: tuple[float, float, float, float]


def overlaps(detections: np.ndarray, box: Sequence[float], rule: str) -> np.ndarray:
    """The overlap of each detection (``[N, 4]`` pixel xyxy) with a box by ``rule`` (``inside`` or ``iou``)."""
    if rule not in OVERLAP_RULES:
        raise ValueError(f"overlap rule: expected one of {list(OVERLAP_RULES)} (got {rule!r})")
    d = np.asarray(detections, dtype=float).reshape(-1, 4)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    inter = (np.clip(np.minimum(d[:, 2], bx1) - np.maximum(d[:, 0], bx0), 0, None)
             * np.clip(np.minimum(d[:, 3], by1) - np.maximum(d[:, 1], by0), 0, None))
    det_area = np.clip(d[:, 2] - d[:, 0], 0, None) * np.clip(d[:, 3] - d[:, 1], 0, None)
    if rule == "inside":
        denominator = det_area
    else:
        denominator = det_area + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, inter / denominator, 0.0)


def overlap(detection: Sequence[float], box: Sequence[float], rule: str) -> float:
    """The overlap of one detection with a box (both pixel xyxy) by ``rule`` (``inside`` or ``iou``)."""
    return float(overlaps(np.asarray([detection], dtype=float), box, rule)[0])


def _folder_hash(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def _expected(kind: str) -> str:
    model_cls, proc_cls, hub_id, _, _ = DETECTORS[kind]
    return (f"a local folder holding a {model_cls} and its {proc_cls} as save_pretrained writes them (config.json, "
            f"model weights, {' or '.join(PROCESSOR_FILES)}, tokenizer files); e.g. on a machine with network: "
            f"python -c \"from transformers import {model_cls}, {proc_cls}; "
            f"[c.from_pretrained('{hub_id}').save_pretrained('DIR') for c in ({model_cls}, {proc_cls})]\"")


def check_detector_folder(kind: str, folder: str | Path | None, where: str) -> list[Path]:
    """The weights files of a detector folder; a ModelError naming the missing file and what goes there."""
    if kind not in DETECTORS:
        raise ModelError(f"{where}: detector '{kind}': expected one of {sorted(DETECTORS)}")
    if folder is None:
        raise ModelError(f"{where}: {kind} detector: no folder given; expected {_expected(kind)}")
    if isinstance(folder, str) and looks_like_hub_id(folder) and not Path(folder).exists():
        raise ModelError(f"{where}: {kind} detector '{folder}' looks like a hub id; the bench never downloads "
                         f"weights: expected {_expected(kind)}")
    path = Path(folder)
    if not path.is_dir():
        raise ModelError(f"{where}: {kind} detector folder '{path}' does not exist; expected {_expected(kind)}")
    if not (path / "config.json").is_file():
        raise ModelError(f"{where}: {kind} detector folder '{path}': config.json is missing; "
                         f"expected {_expected(kind)}")
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not weights:
        raise ModelError(f"{where}: {kind} detector folder '{path}': no model weights (*.safetensors or *.bin); "
                         f"expected {_expected(kind)}")
    if not any((path / name).is_file() for name in PROCESSOR_FILES):
        raise ModelError(f"{where}: {kind} detector folder '{path}': {PROCESSOR_FILES[0]} (the processor) is missing; "
                         f"expected {_expected(kind)}")
    return weights


def by_label(detections: Sequence[Detection]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Detections grouped by label as (scores ``[N]``, boxes ``[N, 4]``) arrays."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label in dict.fromkeys(d.label for d in detections):
        mine = [d for d in detections if d.label == label]
        out[label] = (np.array([d.score for d in mine], dtype=float), np.array([d.box for d in mine], dtype=float))
    return out


class OpenVocabDetector:
    """A transformers open-vocabulary detector and its processor, loaded from a local folder."""

    def __init__(self, kind: str, folder: str | Path, *, where: str = "detector", device: str = "cpu"):
        import transformers

        weights = check_detector_folder(kind, folder, where)
        model_cls, proc_cls = (getattr(transformers, name) for name in DETECTORS[kind][:2])
        try:
            self.processor = proc_cls.from_pretrained(str(folder), local_files_only=True)
            self.model = model_cls.from_pretrained(str(folder), local_files_only=True).eval().to(device)
        except (OSError, ValueError) as err:
            raise ModelError(f"{where}: {kind} detector folder '{folder}': cannot be loaded ({err}); "
                             f"expected {_expected(kind)}") from err
        self.kind, self.folder, self.device = kind, Path(folder), device
        self.weights = _folder_hash(weights)

    @property
    def preprocess(self) -> str:
        """What the processor does to the image, in words."""
        size = dict(getattr(self.processor.image_processor, "size", {}) or {})
        shown = ", ".join(f"{k}={v}" for k, v in size.items() if v)
        padding = "padded to a square (bottom/right), " if self.kind == "owlv2" else ""
        return f"{self.kind} processor of the folder: whole image, {padding}resized ({shown})"

    @torch.no_grad()
    def detect(self, image: Image.Image, labels: Sequence[str], template: str) -> list[Detection]:
        """Every candidate box of every label (no threshold), in pixels of ``image``."""
        if not labels:
            return []
        image = image.convert("RGB")
        if self.kind == "owlv2":
            return self._owlv2(image, labels, template)
        return self._grounding_dino(image, labels, template)

    def _owlv2(self, image: Image.Image, labels: Sequence[str], template: str) -> list[Detection]:
        inputs = self.processor(text=[[template.format(label) for label in labels]], images=image,
                                return_tensors="pt", truncation=True).to(self.device)
        outputs = self.model(**inputs)
        scores = outputs.logits[0].sigmoid().float().cpu()  # [patches, labels]: each query on its own
        side = float(max(image.size))  # boxes are relative to the padded square
        boxes = _corners(outputs.pred_boxes[0], (side, side), image.size)
        return [Detection(label, score, box) for q, label in enumerate(labels)
                for score, box in zip(scores[:, q].tolist(), boxes, strict=True)]

    def _grounding_dino(self, image: Image.Image, labels: Sequence[str], template: str) -> list[Detection]:
        prompts = [template.format(label).lower() for label in labels]
        inputs = self.processor(images=[image] * len(labels), text=prompts, padding=True,
                                return_tensors="pt").to(self.device)
        outputs = self.model(**inputs)
        # as post_process_grounded_object_detection scores a box: max over the prompt's tokens of sigmoid(logit)
        scores = outputs.logits.sigmoid().amax(dim=-1).float().cpu()  # [labels, queries]
        out = []
        for q, label in enumerate(labels):
            boxes = _corners(outputs.pred_boxes[q], image.size, image.size)
            out.extend(Detection(label, score, box) for score, box in zip(scores[q].tolist(), boxes, strict=True))
        return out


def _corners(boxes: torch.Tensor, scale: tuple[float, float], size: tuple[int, int]) -> list[tuple[float, ...]]:
    """Normalized ``cx, cy, w, h`` boxes ``[N, 4]`` as pixel ``x0, y0, x1, y1`` (scaled by ``scale`` = (sx, sy)),
    clipped to the image ``size`` = (width, height)."""
    cx, cy, w, h = boxes.float().cpu().unbind(-1)
    sx, sy = scale
    width, height = size
    corners = torch.stack([((cx - w / 2) * sx).clamp(0, width), ((cy - h / 2) * sy).clamp(0, height),
                           ((cx + w / 2) * sx).clamp(0, width), ((cy + h / 2) * sy).clamp(0, height)], dim=-1)
    return [tuple(row) for row in corners.tolist()]


class DetectorJudge:
    """Presence by detection of the concept's class name in its box.

    As a judge on its own, its identity is the box's own concept when present; else the other concept of
    the scene, of another class, whose class is detected in the box (highest score, then scene order); else none.
    """

    def __init__(self, detector: Any, *, threshold: float | None = None, overlap_rule: str = DEFAULT_OVERLAP[0],
                 min_overlap: float = DEFAULT_OVERLAP[1], query: str | None = None, ref: str | None = None):
        kind = detector.kind
        _, _, _, default_threshold, default_query = DETECTORS[kind]
        self.detector = detector
        self.threshold = float(default_threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"{kind} detector: threshold: expected a score in [0, 1] (got {self.threshold})")
        if overlap_rule not in OVERLAP_RULES:
            raise ValueError(f"{kind} detector: overlap: expected one of {list(OVERLAP_RULES)} (got {overlap_rule!r})")
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"{kind} detector: overlap: expected a fraction in (0, 1] (got {min_overlap})")
        self.overlap_rule, self.min_overlap = overlap_rule, float(min_overlap)
        self.query = default_query if query is None else query
        if "{}" not in self.query:
            raise ValueError(f"{kind} detector: query: expected a template with '{{}}' for the class name "
                             f"(got {self.query!r})")
        self.ref = ref or f"{kind}:{detector.folder}"
        self.weights = detector.weights
        self.preprocess = detector.preprocess
        self.crop = (f"whole image; a detection counts for a box when its {self._overlap_words()} "
                     f">= {self.min_overlap}")

    def _overlap_words(self) -> str:
        if self.overlap_rule == "inside":
            return "area inside the box / its own area"
        return "intersection over union with the box"

    @property
    def presence_rule(self) -> str:
        """When the concept is present, in words."""
        return (f"{self.detector.kind} detects the concept's class name (query '{self.query}') with score >= "
                f"{self.threshold} and {self._overlap_words()} >= {self.min_overlap}")

    @property
    def identity_rule(self) -> str:
        """How the identity is picked, in words."""
        return ("the concept itself when present; else the other concept of the scene, of another class, whose "
                "class is detected in the box by the same rule (highest score, then scene order); else none")

    def best(self, detections: Mapping[str, tuple[np.ndarray, np.ndarray]], label: str, box: Sequence[float]
             ) -> float | None:
        """The highest score of a ``label`` detection that overlaps ``box`` by the rule (any score), or None.

        ``detections``: label -> (scores ``[N]``, boxes ``[N, 4]``), see :func:`by_label`.
        """
        scores, boxes = detections.get(label, (np.zeros(0), np.zeros((0, 4))))
        fits = scores[overlaps(boxes, box, self.overlap_rule) >= self.min_overlap] if len(scores) else scores
        return float(fits.max()) if len(fits) else None

    def judge(self, image: Image.Image, queries: Sequence[BoxQuery]) -> list[BoxVerdict]:
        """One verdict per query; the detector runs once per image over the scene's class names."""
        if not queries:
            return []
        labels = list(dict.fromkeys(c.class_name for q in queries for c in (q.concept, *q.scene)))
        detections = by_label(self.detector.detect(image, labels, self.query))
        return [self._verdict(q, detections) for q in queries]

    def _verdict(self, query: BoxQuery, detections: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> BoxVerdict:
        name = query.concept.class_name
        own = self.best(detections, name, query.pixels)
        details: dict[str, Any] = {"detection_score": round(own, 6) if own is not None else 0.0}
        if own is not None and own >= self.threshold:
            return BoxVerdict(True, query.concept.id, f"{name} {own:.3f}", details)
        seen = f"no {name} >= {self.threshold}" + (f" (best {own:.3f})" if own is not None else "")
        found: tuple[float, ConceptCard] | None = None
        for rival in query.rivals:  # scene order: the first of equal scores wins
            hit = self.best(detections, rival.class_name, query.pixels) if rival.class_name != name else None
            if hit is not None and hit >= self.threshold and (found is None or hit > found[0]):
                found = (hit, rival)
        if found is not None:
            score, rival = found
            return BoxVerdict(False, rival.id, f"{seen}; {rival.class_name} {score:.3f}", details)
        return BoxVerdict(False, None, seen, details)


def detector_judge(kind: str, *, weights: str | Path | None = None, origin: str = "", device: str = "cpu",
                   threshold: float | None = None, overlap_rule: str = DEFAULT_OVERLAP[0],
                   min_overlap: float = DEFAULT_OVERLAP[1], query: str | None = None, **_: Any) -> DetectorJudge:
    """The built-in ``builtin:owlv2`` / ``builtin:grounding-dino`` judge on the detector folder ``weights``
    (``origin`` names where the request came from, for errors)."""
    where = f"{origin}: builtin:{kind}" if origin else f"builtin:{kind}"
    if weights is None:
        check_detector_folder(kind, None, where)
    detector = OpenVocabDetector(kind, weights, where=where, device=device)  # type: ignore[arg-type]
    return DetectorJudge(detector, threshold=threshold, overlap_rule=overlap_rule, min_overlap=min_overlap,
                         query=query)
