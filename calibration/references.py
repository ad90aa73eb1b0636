"""The reference images of the calibration (see :mod:`calibration`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from bench.boxes import to_xyxy_pixels
from bench.methods import Generation
from bench.seeds import initial_noise
from bench.spec import Concept, Scene, substitute_classes

if TYPE_CHECKING:
    from bench.context import RunContext


def swapped_concepts(scene: Scene, concepts: Mapping[str, Concept]) -> list[Concept]:
    """The scene's region concepts with the first two exchanged (one region: another concept of the dataset)."""
    own = [concepts[r.concept] for r in scene.regions]
    if len(own) >= 2:
        own[0], own[1] = own[1], own[0]
        return own
    others = [c for c in concepts.values() if not c.background and c.id not in scene.concept_ids]
    if not others:
        raise ValueError(f"scene '{scene.id}': a swapped reference needs two regions or another concept in the spec")
    return [others[0], *own[1:]]


_FLOORS: OrderedDict[tuple[Any, ...], Image.Image] = OrderedDict()  # the last few floors (references run item-major)


def base_floor(scene: Scene, seed: int, ctx: RunContext, steps: int, guidance_scale: float) -> Image.Image:
    """The base model on the global prompt with every concept's tokens replaced by its class word (cached:
    the other references of the same item reuse it)."""
    pipe = ctx.base_pipeline(scene.style)  # noted as used by this item, cached or not
    key = (id(pipe), scene.prompt, scene.negative_prompt, scene.width, scene.height, seed, steps, guidance_scale)
    if key not in _FLOORS:
        _FLOORS[key] = _sample_floor(pipe, scene, seed, ctx, steps, guidance_scale)
        while len(_FLOORS) > 4:
            _FLOORS.popitem(last=False)
    return _FLOORS[key].copy()


@torch.no_grad()
def _sample_floor(pipe: Any, scene: Scene, seed: int, ctx: RunContext, steps: int, guidance_scale: float
                  ) -> Image.Image:
    prompt = substitute_classes(scene.prompt, ctx.spec.concepts.values())
    shape = (1, pipe.unet.config.in_channels, scene.height // pipe.vae_scale_factor,
             scene.width // pipe.vae_scale_factor)
    latents = initial_noise(seed, shape, dtype=pipe.unet.dtype).to(pipe.unet.device)
    return pipe(prompt=prompt, negative_prompt=scene.negative_prompt, latents=latents, num_inference_steps=steps,
                guidance_scale=guidance_scale, height=scene.height, width=scene.width).images[0]


def _cutout(reference: Path, mask: Path | None) -> Image.Image:
    """The reference as RGBA: its mask as alpha and cropped to the mask's bounding box (opaque without a mask)."""
    with Image.open(reference) as image:
        rgba = image.convert("RGBA")
    if mask is None:
        return rgba
    with Image.open(mask) as m:
        alpha = m.convert("L").resize(rgba.size, Image.Resampling.NEAREST).point(lambda v: 255 if v > 127 else 0)
    rgba.putalpha(alpha)
    bbox = alpha.getbbox()
    return rgba.crop(bbox) if bbox is not None else rgba


def pasted(canvas: Image.Image, scene: Scene, concepts: Sequence[Concept], seed: int, ctx: RunContext) -> Image.Image:
    """Each region's concept reference (number ``seed mod n`` in sorted order) fitted into its box over ``canvas``."""
    out = canvas.convert("RGB").copy()
    for region, concept in zip(scene.regions, concepts, strict=True):
        references = ctx.reference_images(concept.id)
        reference = references[seed % len(references)]
        masks = {p.stem: p for p in ctx.assets.mask_images(concept.id)}
        piece = _cutout(reference, masks.get(reference.stem))
        x0, y0, x1, y1 = to_xyxy_pixels(region.box, out.width, out.height)
        scale = min((x1 - x0) / piece.width, (y1 - y0) / piece.height)
        size = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
        piece = piece.resize(size, Image.Resampling.LANCZOS)
        left, top = x0 + (x1 - x0 - size[0]) // 2, y0 + (y1 - y0 - size[1]) // 2
        out.paste(piece, (left, top), piece)
    return out


def blank_like(floor: Image.Image) -> Image.Image:
    """A blank image in the floor's background colour (the median colour of its border)."""
    pixels = np.asarray(floor.convert("RGB"))
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colour = tuple(int(v) for v in np.median(border, axis=0))
    return Image.new("RGB", floor.size, colour)


class ReferenceImage:
    """One reference kind (``ref-oracle``, ``ref-swapped``, ``ref-floor-blank``, ``ref-floor-base``, ``ref-noise``)."""

    def __init__(self, name: str, params: Mapping[str, Any]):
        self.name, self.params = name, dict(params)

    def generate(self, scene: Scene, seed: int, ctx: RunContext) -> Generation:
        """The reference image of ``scene`` for ``seed`` and how it was made."""
        if self.name == "ref-noise":
            noise = np.random.default_rng(seed).integers(0, 256, (scene.height, scene.width, 3), dtype=np.uint8)
            return Generation(Image.fromarray(noise), {"made_by": "uniform noise, numpy default_rng(seed)"})
        oracle_ref = ctx.spec.evaluation.oracle
        if self.name != "ref-floor-base" and oracle_ref is not None:
            oracle = ctx.model(oracle_ref, "oracle", where=f"{ctx.spec.path}: field 'evaluation.oracle'")
            made_by = f"oracle {oracle_ref}"
            if self.name == "ref-floor-blank":
                return Generation(oracle.blank(scene, seed), {"made_by": made_by})
            concepts = self._concepts(scene, ctx)
            return Generation(oracle.render(scene, concepts, seed), {"made_by": made_by,
                                                                     "concepts": [c.id for c in concepts]})
        floor = base_floor(scene, seed, ctx, int(self.params["steps"]), float(self.params["guidance_scale"]))
        if self.name == "ref-floor-base":
            return Generation(floor, {"made_by": "base model, class words, no concept LoRA",
                                      "prompt": substitute_classes(scene.prompt, ctx.spec.concepts.values())})
        if self.name == "ref-floor-blank":
            return Generation(blank_like(floor), {"made_by": "median border colour of the base-model floor"})
        concepts = self._concepts(scene, ctx)
        made_by = "references pasted over the base-model floor"
        return Generation(pasted(floor, scene, concepts, seed, ctx), {"made_by": made_by,
                                                                      "concepts": [c.id for c in concepts]})

    def _concepts(self, scene: Scene, ctx: RunContext) -> list[Concept]:
        if self.name == "ref-swapped":
            return swapped_concepts(scene, ctx.spec.concepts)
        return [ctx.spec.concepts[r.concept] for r in scene.regions]
