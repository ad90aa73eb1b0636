"""CLIP-I / DINO (crop vs the concept's references) and CLIP-T (crop vs its class-substituted prompt).

Targets of a scene: every region's box with its concept, plus, when the scene's global prompt names
a background concept, that concept on the whole image (``region = -1``), as the paper does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from bench.boxes import Box
from bench.spec import DatasetSpec, Scene
from metrics.api import ScoreItem
from metrics.context import Embedder, ScoreContext
from metrics.crops import check_crop_mode, crop_box
from metrics.formulas import PAIRINGS, image_alignment, text_alignment
from metrics.text import caption


@dataclass(frozen=True)
class Target:
    """One scored part of a scene: a concept, its box (None = whole image) and its prompt."""

    concept: str
    region: int
    box: Box | None
    prompt: str


def scene_targets(spec: DatasetSpec, scene: Scene) -> list[Target]:
    """The regions of ``scene`` in order, then its background concept on the whole image, if any."""
    targets = [Target(r.concept, i, r.box, r.prompt) for i, r in enumerate(scene.regions)]
    background = spec.scene_background(scene)
    if background is not None:
        targets.append(Target(background.id, -1, None, scene.prompt))
    return targets


def _check(params: Mapping[str, Any], name: str) -> None:
    check_crop_mode(params["crop_mode"])
    if "pairing" in params and params["pairing"] not in PAIRINGS:
        raise ValueError(f"metric '{name}': pairing: expected one of {list(PAIRINGS)} (got {params['pairing']!r})")


class ImageSimilarity:
    """Mean (or first-reference) similarity of each target's crop to its concept's reference images."""

    kind = "I"

    def __init__(self, name: str, params: Mapping[str, Any], backbone: str):
        _check(params, name)
        self.name, self.backbone = name, backbone
        self.crop_mode: str = params["crop_mode"]
        self.pairing: str = params["pairing"]
        self.scale, self.clip0 = float(params["scale"]), bool(params["clip0"])

    def embedder(self, ctx: ScoreContext) -> Embedder:
        """The backbone this metric embeds with."""
        return ctx.resource(self.backbone)

    def conventions(self, ctx: ScoreContext) -> dict[str, Any]:
        """Model, weights, preprocessing, crop mode, formula and pairing of this score."""
        emb = self.embedder(ctx)
        return {
            "model": emb.name,
            "weights": emb.weights,
            "preprocess": emb.preprocess_desc,
            "crop_mode": self.crop_mode,
            "scale": self.scale,
            "clip0": self.clip0,
            "prefix": None,
            "pairing": f"{self.pairing} (references sorted by file name)",
            "text": None,
        }

    def score(self, items: Sequence[ScoreItem], ctx: ScoreContext) -> list[list[dict[str, Any]]]:
        """One row per target of each item; all crops of the batch go through the model at once."""
        emb = self.embedder(ctx)
        plans = [scene_targets(ctx.spec, item.scene) for item in items]
        crops = [
            crop_box(item.image, t.box, self.crop_mode) for item, plan in zip(items, plans, strict=True) for t in plan
        ]
        vectors = emb.embed_images(crops)
        out, row = [], 0
        for plan in plans:
            rows = []
            for target in plan:
                refs = ctx.reference_embeddings(emb, target.concept, self.crop_mode)
                value = image_alignment(vectors[row : row + 1], refs, self.pairing, self.scale, self.clip0)
                rows.append(
                    {
                        "concept": target.concept,
                        "region": target.region,
                        "value": float(value[0]),
                        "references": int(refs.shape[0]),
                    }
                )
                row += 1
            out.append(rows)
        return out


class TextAlignment:
    """CLIP similarity of each target's crop (or whole image) to its prompt, class names substituted."""

    kind = "T"

    def __init__(self, name: str, params: Mapping[str, Any]):
        _check(params, name)
        if params["view"] not in ("crop", "image"):
            raise ValueError(f"metric '{name}': view: expected 'crop' or 'image' (got {params['view']!r})")
        self.name = name
        self.crop_mode: str = params["crop_mode"]
        self.prefix: str = params["prefix"]
        self.view: str = params["view"]
        self.scale, self.clip0 = float(params["scale"]), bool(params["clip0"])

    def conventions(self, ctx: ScoreContext) -> dict[str, Any]:
        """Model, weights, preprocessing, crop mode, formula, prefix and text handling of this score."""
        emb = ctx.clip()
        return {
            "model": emb.name,
            "weights": emb.weights,
            "preprocess": emb.preprocess_desc,
            "crop_mode": self.crop_mode if self.view == "crop" else "whole image",
            "scale": self.scale,
            "clip0": self.clip0,
            "prefix": self.prefix,
            "pairing": f"{self.view} vs its own prompt",
            "text": "concept tokens -> class name; open_clip tokenizer, truncated to the context length",
        }

    def captions(self, ctx: ScoreContext, scene: Scene) -> list[str]:
        """The caption of each target of ``scene``, in target order."""
        concepts = list(ctx.spec.concepts.values())
        return [caption(t.prompt, concepts, self.prefix) for t in scene_targets(ctx.spec, scene)]

    def score(self, items: Sequence[ScoreItem], ctx: ScoreContext) -> list[list[dict[str, Any]]]:
        """One row per target of each item; images and captions are embedded in one batch each."""
        emb = ctx.clip()
        plans = [scene_targets(ctx.spec, item.scene) for item in items]
        views: list[Image.Image] = []
        texts: list[str] = []
        for item, plan in zip(items, plans, strict=True):
            texts.extend(self.captions(ctx, item.scene))
            for t in plan:
                box = t.box if self.view == "crop" else None
                views.append(crop_box(item.image, box, self.crop_mode))
        values = text_alignment(emb.embed_images(views), emb.embed_texts(texts), self.scale, self.clip0)
        out, row = [], 0
        for plan in plans:
            rows = []
            for target in plan:
                rows.append(
                    {
                        "concept": target.concept,
                        "region": target.region,
                        "value": float(values[row]),
                        "caption": texts[row],
                    }
                )
                row += 1
            out.append(rows)
        return out
