"""The sequential-inpainting protocol shared by Paint-by-Example and AnyDoor.

1. The base model makes a background from the scene's global prompt, concept tokens replaced by
   class words (LoRA-Composer's ``gen_basemodel_bg.py``: DPM-Solver++, 50 steps, CFG 7.5).
2. The boxes are inpainted in spec order, one call per box; the result of one box is the canvas of
   the next, so a later box overwrites an earlier one where they overlap.
3. Each box uses one reference image of its concept, chosen deterministically from the seed, and a
   per-box seed derived from the scene seed (:func:`box_seed`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
from PIL import Image

from baselines.specs.inpaint import BACKGROUND_DEFAULTS, BACKGROUND_DEVIATIONS  # noqa: F401 - re-exported
from bench.boxes import Box, to_xyxy_pixels
from bench.seeds import initial_noise
from bench.spec import DatasetSpec, Scene

BACKGROUND_PROMPTS = ("class_words", "remove")
REFERENCE_CHOICES = ("seed", "first")


def class_word_prompt(prompt: str, spec: DatasetSpec, mode: str = "class_words") -> str:
    """The prompt with every concept's token string replaced by its class word (or removed).

    ``mode='class_words'``: "<catA1> <catA2> on a sofa" -> "cat on a sofa" (LoRA-Composer's
    background prompts); ``mode='remove'``: the foreground concepts' tokens are deleted, background
    concepts still become their class words.
    """
    if mode not in BACKGROUND_PROMPTS:
        raise ValueError(f"background prompt mode {mode!r}: expected one of {list(BACKGROUND_PROMPTS)}")
    out = prompt
    for concept in sorted(spec.concepts.values(), key=lambda c: -len(c.tokens)):
        replacement = "" if (mode == "remove" and not concept.background) else concept.class_name
        out = out.replace(concept.tokens, replacement)
        for token in concept.token_list:
            out = out.replace(token, replacement)
    out = re.sub(r"\s+", " ", out)
    out = re.sub(r"\s+([,.;])", r"\1", out)
    out = re.sub(r"^(\s*(and|,)\s*)+|(\s*(and|,)\s*)+$", "", out)
    return out.strip()


def box_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th box of an image whose background uses ``seed``."""
    return (seed + 1000 * (index + 1)) % (2**31)


def choose_reference(paths: Sequence[Path], seed: int, rule: str = "seed") -> Path:
    """One reference image: ``paths[seed % n]`` (rule 'seed') or the first by name (rule 'first')."""
    if not paths:
        raise ValueError("the concept has no reference images; expected at least one image file")
    if rule not in REFERENCE_CHOICES:
        raise ValueError(f"reference rule {rule!r}: expected one of {list(REFERENCE_CHOICES)}")
    ordered = sorted(paths, key=lambda p: Path(p).name)
    return Path(ordered[seed % len(ordered) if rule == "seed" else 0])


def background_pipeline(base: StableDiffusionPipeline) -> StableDiffusionPipeline:
    """A new pipeline on the base model's components with its own DPM-Solver++ scheduler."""
    components = {k: v for k, v in base.components.items() if k != "scheduler"}
    pipe = StableDiffusionPipeline(
        **components,
        scheduler=DPMSolverMultistepScheduler.from_config(base.scheduler.config),
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate_background(
    base: StableDiffusionPipeline,
    prompt: str,
    negative_prompt: str,
    width: int,
    height: int,
    seed: int,
    steps: int = 50,
    guidance_scale: float = 7.5,
) -> Image.Image:
    """The background image: the base model on the class-word prompt, noise drawn on the CPU."""
    pipe = background_pipeline(base)
    factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, height // factor, width // factor)
    latents = initial_noise(seed, shape).to(pipe.device, pipe.unet.dtype)
    out = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt or None,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        latents=latents,
    )
    return out.images[0].convert("RGB")


@dataclass(frozen=True)
class Window:
    """A pixel window ``[x0, x1) x [y0, y1)`` of the canvas and the size the model works at."""

    x0: int
    y0: int
    x1: int
    y1: int
    work_w: int
    work_h: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the window on the canvas."""
        return (self.x1 - self.x0, self.y1 - self.y0)


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def crop_window(
    box: Box,
    width: int,
    height: int,
    mode: str = "crop",
    expand: float = 2.0,
    size: int = 512,
    multiple: int = 8,
) -> Window:
    """The canvas window a box is inpainted in.

    ``mode='full'``: the whole canvas at its own size. ``mode='crop'``: the box expanded ``expand``
    times around its centre, made square where the canvas allows, shifted inside the canvas, and
    worked on at ``size`` px on its longer side (a multiple of ``multiple``).
    """
    if mode == "full":
        return Window(0, 0, width, height, _round_to(width, multiple), _round_to(height, multiple))
    if mode != "crop":
        raise ValueError(f"inpainting mode {mode!r}: expected 'crop' or 'full'")
    bx0, by0, bx1, by1 = to_xyxy_pixels(box, width, height)
    side = min(round(max(bx1 - bx0, by1 - by0) * expand), width, height)
    win_w, win_h = max(side, bx1 - bx0), max(side, by1 - by0)
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    x0 = int(min(max(round(cx - win_w / 2), 0), width - win_w))
    y0 = int(min(max(round(cy - win_h / 2), 0), height - win_h))
    scale = size / max(win_w, win_h)
    return Window(
        x0, y0, x0 + win_w, y0 + win_h, _round_to(win_w * scale, multiple), _round_to(win_h * scale, multiple)
    )


def box_mask_image(box: Box, canvas_w: int, canvas_h: int, window: Window) -> Image.Image:
    """The white-on-black mask of the box inside a window, at the window's working size."""
    bx0, by0, bx1, by1 = to_xyxy_pixels(box, canvas_w, canvas_h)
    mask = np.zeros((window.size[1], window.size[0]), dtype=np.uint8)
    mask[max(by0 - window.y0, 0) : max(by1 - window.y0, 0), max(bx0 - window.x0, 0) : max(bx1 - window.x0, 0)] = 255
    return Image.fromarray(mask).resize((window.work_w, window.work_h), Image.NEAREST)


def cut_window(canvas: Image.Image, window: Window) -> Image.Image:
    """The window's pixels, resized to the working size."""
    crop = canvas.crop((window.x0, window.y0, window.x1, window.y1))
    if crop.size != (window.work_w, window.work_h):
        crop = crop.resize((window.work_w, window.work_h), Image.BICUBIC)
    return crop


def paste_back(
    canvas: Image.Image, result: Image.Image, window: Window, box: Box, inside_box_only: bool
) -> Image.Image:
    """The canvas with the model's window result pasted: only inside the box, or over the whole window."""
    out = np.array(canvas.convert("RGB"))
    patch = np.array(result.convert("RGB").resize(window.size, Image.BICUBIC))
    region = np.zeros(patch.shape[:2], dtype=bool)
    if inside_box_only:
        bx0, by0, bx1, by1 = to_xyxy_pixels(box, canvas.width, canvas.height)
        region[max(by0 - window.y0, 0) : by1 - window.y0, max(bx0 - window.x0, 0) : bx1 - window.x0] = True
    else:
        region[:] = True
    view = out[window.y0 : window.y1, window.x0 : window.x1]
    view[region] = patch[region]
    return Image.fromarray(out)


def base_model_ref(ctx: object, style: str) -> str:
    """The base model reference of a style, resolved through the run's assets when it has them."""
    assets = getattr(ctx, "assets", None)
    if assets is not None:
        return str(assets.base_model_ref(style))
    return str(ctx.spec.base_models.get(style, ""))  # type: ignore[attr-defined]


def scene_background(scene: Scene, seed: int, ctx: object, params: dict) -> tuple[Image.Image, dict]:
    """Generate the scene's background with the run's base model; returns the image and its record.

    ``params`` supplies ``background_prompt``, ``background_steps`` and ``background_guidance``.
    """
    spec: DatasetSpec = ctx.spec  # type: ignore[attr-defined]
    prompt = class_word_prompt(scene.prompt, spec, params["background_prompt"])
    image = generate_background(
        ctx.base_pipeline(scene.style),  # type: ignore[attr-defined]
        prompt,
        scene.negative_prompt,
        scene.width,
        scene.height,
        seed,
        steps=int(params["background_steps"]),
        guidance_scale=float(params["background_guidance"]),
    )
    record = {
        "prompt": prompt,
        "negative_prompt": scene.negative_prompt,
        "seed": seed,
        "sampler": "DPMSolverMultistepScheduler (DPM-Solver++)",
        "steps": int(params["background_steps"]),
        "guidance_scale": float(params["background_guidance"]),
        "size_wh": [scene.width, scene.height],
    }
    return image, record


# ----------------------------------------------------------------------------------------------
# Reference images


def reference_mask(ctx: Any, concept_id: str, image_path: Path, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The concept's mask for a reference image (same stem in its masks folder), else all ones."""
    assets = getattr(ctx, "assets", None)
    if assets is not None:
        candidates = assets.mask_images(concept_id)
    else:
        concept = ctx.concept(concept_id)
        folder = Path(ctx.spec.path).parent / (ctx.spec.asset_root or "") / concept.masks if concept.masks else None
        candidates = sorted(folder.glob("*")) if folder is not None else []
    for candidate in candidates:
        if Path(candidate).stem == image_path.stem:
            mask = np.array(Image.open(candidate).convert("L").resize(shape[::-1], Image.NEAREST)) > 127
            return mask.astype(np.uint8), str(candidate)
    return np.ones(shape, np.uint8), "full image (no mask found)"


# Paint-by-Example's training crops (Fantasy-Studio/Paint-by-Example@2eb6e9c ldm/data/open-images.py L134-142):
# the object's box widened by up to 10 px on each side, clamped to the image.
SUBJECT_PAD = 10


def subject_box(mask: np.ndarray, pad: int = SUBJECT_PAD) -> tuple[int, int, int, int] | None:
    """The pixel box ``(x0, y0, x1, y1)`` (exclusive ends) of a mask's subject widened by ``pad`` px on
    each side within the image, or None when the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    height, width = mask.shape
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    return (x0 - min(pad, x0), y0 - min(pad, y0), x1 + min(pad, width - x1), y1 + min(pad, height - y1))


def reference_example(ctx: Any, concept_id: str, path: Path, rule: str) -> tuple[Image.Image, dict[str, Any]]:
    """A reference image as the example of an inpainting call, and what was done to it (for the record).

    ``rule='mask'``: cropped to the subject of the concept's mask of the same name (:func:`reference_mask`,
    :func:`subject_box`); without such a mask, or with an empty one, the whole image. ``rule='none'``: the
    whole image.
    """
    if rule not in ("mask", "none"):
        raise ValueError(f"parameter 'reference_crop': expected 'mask' or 'none', got {rule!r}")
    image = Image.open(path).convert("RGB")
    if rule == "none":
        return image, {"rule": rule, "mask": None, "box_xyxy": None}
    mask, source = reference_mask(ctx, concept_id, path, (image.height, image.width))
    box = subject_box(mask.astype(bool))
    if box is None:
        return image, {"rule": rule, "mask": f"{source} (empty: whole image used)", "box_xyxy": None}
    return image.crop(box), {"rule": rule, "mask": source, "box_xyxy": list(box)}
