"""Cones2 as a bench method: residual-edited prompt embedding + layout-guided attention sampling."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from baselines.cones2.attention import Cones2AttnProcessor
from baselines.cones2.layout import attention_grids, build_prompt, layout_weights
from baselines.cones2.residual import class_word_length, load_residual, train_residual
from baselines.cones2.sampler import cones2_sample
from baselines.inpaint import base_model_ref
from baselines.specs import cones2 as declared
from baselines.specs.cones2 import DATASET_RESIDUALS, DEFAULTS, DEVIATIONS, NAME  # noqa: F401 - re-exported
from bench.cache import default_cache_dir, entry_lock
from bench.methods import Generation, MethodSpec
from bench.seeds import initial_noise
from bench.spec import Scene


def quick_cache_path(ctx: Any, concept_id: str, base_ref: str, images: list[Path], steps: int, size: int) -> Path:
    """Where a quick residual is cached: the context's ``cache_dir`` or the bench cache, keyed by its inputs."""
    digest = hashlib.sha256(f"{base_ref}|{steps}|{size}".encode())
    for image in images:
        digest.update(Path(image).read_bytes())
    root = Path(getattr(ctx, "cache_dir", None) or default_cache_dir())
    return root / "cones2" / f"{concept_id}-quick{steps}-{digest.hexdigest()[:12]}.pt"


def dataset_residual(ctx: Any, concept_id: str) -> Path | None:
    """The residual the dataset ships for a concept, ``<asset root>/cones2/<concept id>.pt``, if there is one."""
    assets = getattr(ctx, "assets", None)
    if assets is None:
        return None
    path = assets.resolve(f"{DATASET_RESIDUALS}/{concept_id}.pt")
    return path if path.is_file() else None


class Cones2Method:
    """Cones2 on the run's base model (SD1.x or SD2.x layout)."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = dict(params)
        if self.params["missing_residual"] not in ("auto", "error", "quick"):
            raise ValueError(f"method '{NAME}': parameter 'missing_residual' must be 'auto', 'error' or 'quick'")
        self._quick: dict[tuple[str, str], torch.Tensor] = {}

    def _residual(self, concept_id: str, ctx: Any, pipe: Any, style: str) -> tuple[torch.Tensor, str]:
        concept = ctx.concept(concept_id)
        hidden = int(pipe.text_encoder.config.hidden_size)
        length = class_word_length(pipe.tokenizer, concept.class_name)
        where = f"method '{NAME}': residual of concept '{concept_id}'"
        explicit = dict(self.params["residuals"]).get(concept_id)
        if explicit:
            return load_residual(explicit, hidden, length, where), f"file:{explicit}"
        if self.params["residual_dir"]:
            path = Path(self.params["residual_dir"]) / f"{concept_id}.pt"
            if path.is_file():
                return load_residual(path, hidden, length, where), f"file:{path}"
        shipped = dataset_residual(ctx, concept_id)
        if shipped is not None:
            return load_residual(shipped, hidden, length, where), f"dataset:{shipped}"
        base_ref = base_model_ref(ctx, style)
        mode = self.params["missing_residual"]
        if mode == "error" or (mode == "auto" and not base_ref.startswith("builtin:")):
            raise ValueError(
                f"{where}: none given; expected residuals={{'{concept_id}': PATH}} or "
                f"residual_dir=DIR holding {concept_id}.pt, trained on base model '{base_ref}' with "
                f"`bench cones2-train`"
            )
        steps = int(self.params["quick_train_steps"])
        key = (base_ref, concept_id)
        images = ctx.reference_images(concept_id)
        path = quick_cache_path(ctx, concept_id, base_ref, images, steps, int(self.params["quick_train_resolution"]))
        if key not in self._quick:
            with entry_lock(path):  # the ranks of one run train it once and share it
                if path.is_file():
                    self._quick[key] = load_residual(path, hidden, length, where)
                else:
                    resolution = int(self.params["quick_train_resolution"])
                    self._quick[key] = train_residual(pipe, concept, images, steps, path, resolution=resolution)
        return self._quick[key], f"quick:{steps} steps (cached at {path})"

    @torch.no_grad()
    def generate(self, scene: Scene, seed: int, ctx: Any) -> Generation:
        """Make the scene's image with Cones2's layout guidance."""
        p = self.params
        pipe = ctx.base_pipeline(scene.style)
        device = pipe.unet.device
        # 1. Prompt, subjects and residual-edited condition
        prompt, subjects, appended = build_prompt(scene, ctx.spec, pipe.tokenizer)
        ids = pipe.tokenizer(
            prompt,
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        uncond_ids = pipe.tokenizer(
            "", padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt"
        ).input_ids
        cond = pipe.text_encoder(ids.to(device))[0].float().clone()
        uncond = pipe.text_encoder(uncond_ids.to(device))[0].float()
        sources = {}
        for subject in subjects:
            residual, sources[subject.concept] = self._residual(subject.concept, ctx, pipe, scene.style)
            cond[0, subject.positions] += residual.to(device)
        # 2. Layout weight maps for every attention resolution
        factor = pipe.vae_scale_factor
        grids = attention_grids(scene.height // factor, scene.width // factor, len(pipe.unet.config.block_out_channels))
        weights = layout_weights(
            subjects,
            ids[0].tolist(),
            pipe.tokenizer,
            grids,
            float(p["weight_active"]),
            float(p["weight_negative"]),
            p["token_matching"],
        )
        # 3. Sample with the Cones2 processors, then restore the shared UNet's processors
        noise = initial_noise(seed, (1, pipe.unet.config.in_channels, scene.height // factor, scene.width // factor))
        original = dict(pipe.unet.attn_processors)
        pipe.unet.set_attn_processor(Cones2AttnProcessor())
        try:
            latents = cones2_sample(
                pipe.unet,
                dict(pipe.scheduler.config),
                cond,
                uncond,
                weights,
                noise,
                steps=int(p["steps"]),
                guidance_scale=float(p["guidance_scale"]),
                guidance_steps=int(p["guidance_steps"]),
                guidance_weight=float(p["guidance_weight"]),
                self_recurrence=bool(p["self_recurrence"]),
                generator=torch.Generator("cpu").manual_seed(seed),
            )
        finally:
            pipe.unet.set_attn_processor(original)
        # 4. Decode
        decoded = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor).sample
        image: Image.Image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
        record = {
            "method": NAME,
            "prompt": prompt,
            "appended_concepts": appended,
            "subjects": [
                {
                    "concept": s.concept,
                    "class_word": s.class_word,
                    "token_positions": list(s.positions),
                    "box": list(s.box),
                }
                for s in subjects
            ],
            "residuals": sources,
            "sampler": "first-order LMS (Euler) with self-recurrence",
            "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        }
        return Generation(image=image, record=record)


def method_spec() -> MethodSpec:
    """The Cones2 method, made by :class:`Cones2Method`."""
    return declared.method_spec(Cones2Method)
