"""The per-box classifier: what (if anything) is inside a box of a toy-world image.

A small CNN reads a square crop around the box (resized to 32x32) and predicts the object's shape
(or ``none``), colour and texture. It is trained on rendered scenes, half of them passed through
the toy VAE so that decoded samples are in its domain (``python -m toytrain classifier``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from toyworld.models import load_weights, weights_path
from toyworld.world import COLOURS, SHAPES, TEXTURES

CROP = 32
NONE = "none"
SHAPE_LABELS = (*SHAPES, NONE)
COLOUR_LABELS = tuple(COLOURS)
TEXTURE_LABELS = TEXTURES


@dataclass(frozen=True)
class BoxPrediction:
    """The classifier's reading of one box: ``shape`` is ``'none'`` when the box holds no object."""

    shape: str
    colour: str
    texture: str
    confidence: float  # probability of the predicted shape (or of 'none')

    @property
    def empty(self) -> bool:
        """True when no object was found in the box."""
        return self.shape == NONE


class BoxClassifier(nn.Module):
    """Three conv stages and a dense layer, with shape / colour / texture heads."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128), nn.ReLU(),
        )
        self.shape = nn.Linear(128, len(SHAPE_LABELS))
        self.colour = nn.Linear(128, len(COLOUR_LABELS))
        self.texture = nn.Linear(128, len(TEXTURE_LABELS))

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the three heads for ``[N, 3, 32, 32]`` crops in [-1, 1]."""
        h = self.features(crops)
        return self.shape(h), self.colour(h), self.texture(h)


def load_classifier(folder: Path | None = None) -> BoxClassifier:
    """The trained classifier from the committed weights (or ``folder``)."""
    model = load_weights(BoxClassifier(), weights_path("classifier", folder), "python -m toytrain classifier")
    return model.eval()


def square_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The square around a box's centre with side max(w, h), shifted (and shrunk) to fit the image."""
    x0, y0, x1, y1 = box
    side = min(max(x1 - x0, y1 - y0, 4.0), width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0.0), width - side)
    top = min(max(cy - side / 2, 0.0), height - side)
    return round(left), round(top), round(left + side), round(top + side)


def crop_tensor(image: Image.Image, box: Sequence[float]) -> torch.Tensor:
    """The classifier's ``[3, 32, 32]`` input for one pixel box ``(x0, y0, x1, y1)``."""
    crop = image.convert("RGB").crop(square_box(box, *image.size)).resize((CROP, CROP), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1).div(127.5).sub(1.0)


@torch.no_grad()
def classify_boxes(model: BoxClassifier, image: Image.Image, boxes: Sequence[Sequence[float]]) -> list[BoxPrediction]:
    """What the classifier sees in each pixel box of ``image``."""
    if not boxes:
        return []
    crops = torch.stack([crop_tensor(image, box) for box in boxes])
    shape_logits, colour_logits, texture_logits = model(crops)
    shape_probs = shape_logits.softmax(-1)
    predictions = []
    for i in range(len(boxes)):
        s = int(shape_probs[i].argmax())
        predictions.append(BoxPrediction(
            SHAPE_LABELS[s], COLOUR_LABELS[int(colour_logits[i].argmax())],
            TEXTURE_LABELS[int(texture_logits[i].argmax())], float(shape_probs[i, s]),
        ))
    return predictions


def border_colour(pixels: np.ndarray) -> np.ndarray:
    """The median RGB of an ``[H, W, 3]`` image's border pixels: its background colour on plain backgrounds."""
    return np.median(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]), axis=0)


def foreground_mask(image: Image.Image, threshold: int = 60) -> np.ndarray:
    """``[H, W]`` bool: the pixels that differ from the background (median of the border).

    Foreground is a summed absolute RGB difference above ``threshold``, opened with a 3x3 window so that
    lines and specks under 3 px wide are not foreground (the toy VAE's decoder brightens or darkens the
    image's outermost rows and columns on plain backgrounds).
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    raw = Image.fromarray(((np.abs(pixels - border_colour(pixels)).sum(-1) > threshold) * 255).astype(np.uint8))
    return np.asarray(raw.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))) > 0


def foreground_box(image: Image.Image, threshold: int = 60) -> tuple[float, float, float, float] | None:
    """Bounding box of :func:`foreground_mask`, or None when it holds under 12 pixels.

    Used where no box is given (single-object samples).
    """
    mask = foreground_mask(image, threshold)
    if mask.sum() < 12:
        return None
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


CHECKED = ("shape", "colour")  # the attributes the box judge compares; texture is read, not judged


def describe(prediction: BoxPrediction) -> str:
    """'red striped circle', or 'none' for an empty box."""
    return NONE if prediction.shape == NONE else f"{prediction.colour} {prediction.texture} {prediction.shape}"


def checked_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The shape and colour among a concept's attributes (those it declares)."""
    return {k: attributes[k] for k in CHECKED if k in attributes}


@dataclass(frozen=True)
class ToyVerdict:
    """The toy judge's answer for one box (the fields of ``metrics.api.BoxVerdict``)."""

    present: bool
    identity: str | None
    reading: str
    details: Mapping[str, Any] = field(default_factory=dict)


def verdict(prediction: BoxPrediction, concept: Any, scene: Sequence[Any]) -> ToyVerdict:
    """The toy world's rules for one reading of the box of ``concept`` among the ``scene``'s concepts.

    Present: an object whose shape and colour (those the concept declares) are the concept's. Identity:
    the concept itself when present; else the first other concept of the scene whose shape or colour,
    one the box's concept does not share, the box shows; else None (an empty box is no concept).
    """
    own = checked_attributes(concept.attributes)
    if prediction.shape == NONE:
        return ToyVerdict(False, None, NONE)
    if all(getattr(prediction, k) == v for k, v in own.items()):
        return ToyVerdict(True, concept.id, describe(prediction))
    for other in scene:
        theirs = checked_attributes(other.attributes)
        if other.id != concept.id and any(getattr(prediction, k) == theirs.get(k) != v for k, v in own.items()):
            return ToyVerdict(False, other.id, describe(prediction))
    return ToyVerdict(False, None, describe(prediction))


class ToyBoxJudge:
    """The classifier as a box judge (``metrics.api.BoxJudge``): reads shape, colour and texture per box."""

    preprocess = "RGB crop resized bilinear to 32x32, scaled to [-1, 1]"
    crop = "square around box, 32x32"
    presence_rule = "the classifier reads an object with the concept's shape and colour (those it declares)"
    identity_rule = (
        "the concept itself when present; else the first other concept of the scene whose shape or colour "
        "(one the box's concept does not share) the classifier reads; an empty box is no concept"
    )

    def __init__(self, model: BoxClassifier, ref: str, weights: str):
        self.model, self.ref, self.weights = model, ref, weights

    def read(self, image: Image.Image, boxes: Sequence[Sequence[float]]) -> list[BoxPrediction]:
        """What is in each pixel box ``(x0, y0, x1, y1)`` of ``image``."""
        return classify_boxes(self.model, image, boxes)

    def judge(self, image: Image.Image, queries: Sequence[Any]) -> list[ToyVerdict | None]:
        """The verdict of each query (``metrics.api.BoxQuery``); None for a concept without shape or colour."""
        checked = [i for i, q in enumerate(queries) if checked_attributes(q.concept.attributes)]
        readings = self.read(image, [queries[i].pixels for i in checked]) if checked else []
        out: list[ToyVerdict | None] = [None] * len(queries)
        for i, prediction in zip(checked, readings, strict=True):
            out[i] = verdict(prediction, queries[i].concept, queries[i].scene)
        return out


def _file_hash(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def toy_box_judge(path: Path | None = None, ref: str = "builtin:toy-classifier") -> ToyBoxJudge:
    """The trained classifier (committed weights, or a ``.safetensors`` file of ``BoxClassifier`` weights)."""
    path = path or weights_path("classifier")
    model = load_weights(BoxClassifier(), path, "python -m toytrain classifier").eval()
    return ToyBoxJudge(model, ref, f"sha256:{_file_hash(path)}")
