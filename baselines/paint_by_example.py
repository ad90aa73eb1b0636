"""Paint-by-Example as a multi-concept baseline, through diffusers' ``PaintByExamplePipeline``.

The pipeline lives in ``diffusers.pipelines.deprecated.paint_by_example`` (deprecated since
diffusers 0.34, last supported 0.33.1); the project pins ``diffusers>=0.42,<0.43`` and the tests
check the import path, so an upgrade that drops it fails loudly. Protocol: :mod:`baselines.inpaint`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import CLIPImageProcessor

from baselines.inpaint import (
    base_model_ref,
    box_mask_image,
    box_seed,
    choose_reference,
    crop_window,
    cut_window,
    paste_back,
    reference_example,
    scene_background,
)
from baselines.specs import paint_by_example as declared
from baselines.specs.paint_by_example import (  # noqa: F401 - the declarations, re-exported where they were
    DEFAULTS,
    DEVIATIONS,
    NAME,
    RANDOM_MODEL,
    REFERENCE_CROPS,
    resolve_model,
    unavailable,
)
from bench.methods import Generation, MethodSpec
from bench.seeds import initial_noise
from bench.spec import Scene

try:  # deprecated module: a diffusers without it is reported by unavailable() (a file check), not crashed on here
    from diffusers import PaintByExamplePipeline
    from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
except ImportError:  # pragma: no cover - depends on the installed diffusers
    PaintByExamplePipeline = None  # type: ignore[assignment,misc]
    PaintByExampleImageEncoder = None  # type: ignore[assignment,misc]

_SCHEDULERS = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler}


def load_pbe(path: str | Path, *, where: str = "", dtype: torch.dtype = torch.float32) -> PaintByExamplePipeline:
    """The ``inpainting`` loader: a Paint-by-Example diffusers folder, component by component.

    ``PaintByExamplePipeline.from_pretrained`` cannot resolve ``PaintByExampleImageEncoder`` in
    diffusers 0.42, so each subfolder is loaded with its own class.
    """
    root = Path(path).expanduser()
    index = root / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"paint-by-example parameter 'model': '{root}' has no model_index.json; expected a "
            "diffusers folder of Fantasy-Studio/Paint-by-Example (huggingface-cli download "
            "Fantasy-Studio/Paint-by-Example --local-dir models/Paint-by-Example)"
        )
    scheduler_cls = _SCHEDULERS.get(json.loads(index.read_text())["scheduler"][1], PNDMScheduler)
    return PaintByExamplePipeline(
        vae=AutoencoderKL.from_pretrained(root / "vae", torch_dtype=dtype),
        image_encoder=PaintByExampleImageEncoder.from_pretrained(root / "image_encoder", torch_dtype=dtype),
        unet=UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=dtype),
        scheduler=scheduler_cls.from_pretrained(root / "scheduler"),
        safety_checker=None,
        feature_extractor=CLIPImageProcessor.from_pretrained(root / "feature_extractor"),
        requires_safety_checker=False,
    )


class PaintByExampleMethod:
    """Background from the base model, then one Paint-by-Example call per box."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = dict(params)
        if self.params["mode"] not in ("crop", "full"):
            raise ValueError(f"method '{NAME}': parameter 'mode' must be 'crop' or 'full', got {self.params['mode']!r}")
        if self.params["reference_crop"] not in REFERENCE_CROPS:
            raise ValueError(f"method '{NAME}': parameter 'reference_crop' must be one of {list(REFERENCE_CROPS)}, "
                             f"got {self.params['reference_crop']!r}")
        self._pipe: PaintByExamplePipeline | None = None

    def pipeline(self, ctx: Any, style: str) -> tuple[PaintByExamplePipeline, str]:
        """The PbE pipeline (loaded once) and the reference it came from ('auto': see
        :func:`baselines.specs.paint_by_example.resolve_model`)."""
        ref, reason = resolve_model(str(self.params["model"]), base_model_ref(ctx, style),
                                    f"{ctx.spec.path}: base_models.{style}")
        if ref is None:
            raise ValueError(f"method '{NAME}': {reason}")
        pipe = ctx.model(ref, "inpainting", where=f"{NAME} parameter 'model'")
        if self._pipe is not pipe:
            pipe.set_progress_bar_config(disable=True)
            if pipe.unet.dtype != ctx.dtype:
                pipe = pipe.to(dtype=ctx.dtype)
            self._pipe = pipe.to(ctx.device)
        return self._pipe, ref

    def background(self, scene: Scene, seed: int, ctx: Any) -> tuple[Image.Image, dict]:
        """The scene's background for this seed (the canvas before any box)."""
        return scene_background(scene, seed, ctx, self.params)

    def crop_size(self, pipe: PaintByExamplePipeline) -> int:
        """The working size of a crop: the parameter, or the model's native resolution for 'native'."""
        size = self.params["crop_size"]
        if size == "native":
            return int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
        return int(size)

    @torch.no_grad()
    def inpaint_box(
        self, pipe: PaintByExamplePipeline, canvas: Image.Image, box: Any, example: Image.Image, seed: int
    ) -> tuple[Image.Image, dict]:
        """Inpaint one box with the example image; returns the new canvas and the call's record."""
        p = self.params
        window = crop_window(
            box,
            canvas.width,
            canvas.height,
            p["mode"],
            float(p["crop_expand"]),
            self.crop_size(pipe),
            multiple=pipe.vae_scale_factor,
        )
        image = cut_window(canvas, window)
        mask = box_mask_image(box, canvas.width, canvas.height, window)
        shape = (
            1,
            pipe.vae.config.latent_channels,
            window.work_h // pipe.vae_scale_factor,
            window.work_w // pipe.vae_scale_factor,
        )
        result = pipe(
            example_image=example,
            image=image,
            mask_image=mask,
            height=window.work_h,
            width=window.work_w,
            num_inference_steps=int(p["steps"]),
            guidance_scale=float(p["guidance_scale"]),
            latents=initial_noise(seed, shape).to(pipe.device, pipe.unet.dtype),
        ).images[0]
        canvas = paste_back(canvas, result, window, box, bool(p["paste_inside_box"]))
        return canvas, {
            "window_xyxy": [window.x0, window.y0, window.x1, window.y1],
            "work_size_wh": [window.work_w, window.work_h],
        }

    def generate(self, scene: Scene, seed: int, ctx: Any) -> Generation:
        """Make the scene's image: background, then the boxes in spec order."""
        pipe, model_ref = self.pipeline(ctx, scene.style)
        canvas, bg_record = self.background(scene, seed, ctx)
        boxes = []
        for i, region in enumerate(scene.regions):
            seed_i = box_seed(seed, i)
            ref_path = choose_reference(ctx.reference_images(region.concept), seed_i, self.params["reference"])
            example, crop = reference_example(ctx, region.concept, ref_path, self.params["reference_crop"])
            canvas, call = self.inpaint_box(pipe, canvas, region.box, example, seed_i)
            boxes.append(
                {
                    "concept": region.concept,
                    "box": list(region.box),
                    "seed": seed_i,
                    "reference": str(ref_path),
                    "reference_crop": crop,
                    **call,
                }
            )
        record = {
            "method": NAME,
            "model": model_ref,
            "model_parameter": str(self.params["model"]),
            "scheduler": type(pipe.scheduler).__name__,
            "background": bg_record,
            "boxes": boxes,
            "order": "spec order",
        }
        return Generation(image=canvas, record=record)


def method_spec() -> MethodSpec:
    """The Paint-by-Example method, made by :class:`PaintByExampleMethod`."""
    return declared.method_spec(PaintByExampleMethod)
