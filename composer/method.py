"""LoRA-Composer as a bench method: scene + seed + run context -> image + record."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from diffusers import StableDiffusionPipeline

from bench.boxes import box_to_grid
from bench.lora.apply import lora_merged
from bench.methods import Generation
from bench.seeds import initial_noise
from bench.spec import Scene
from composer.adapter import SceneAdapters, adapter_refs, no_adapter_note
from composer.layout import RegionInput, prepare_layout
from composer.pipeline import ComposerConfig, Sampler, config_record

if TYPE_CHECKING:
    from bench.context import RunContext

DEVIATIONS: tuple[str, ...] = (
    "fix: concept-token positions come from the tokenizer, not whitespace word indices",
    "fix: token positions, maps and boxes are kept per region (upstream indexes tokens in LoRA-folder order)",
    "LoRA deltas (to_k, to_v, to_out.0) are applied in low-rank form as the official optimized_version "
    "branch does (main merges full copies); fp16 results differ slightly",
    "initial noise is drawn on the CPU with torch.Generator (official: fp16 CUDA generator), so official "
    "seeds do not reproduce the official images",
    "guidance losses are computed in float32 from the model-dtype attention maps (official: fp16)",
    "top-k size is at least 1 for a non-empty box (official floor(0.2*|box|)=0 gives NaN)",
    "a self-attention query blocked from every key attends everywhere (the official fp32 constant shift; "
    "fp16 gives NaN)",
    "refinement forwards stop after the last loss-level layer (exact: later layers cannot change the loss)",
    "init_noise_sigma is applied once (official applies it twice; identical for DPM-Solver)",
    "latent re-initialization follows the code (no gradient step first); reinit_update=true gives the "
    "paper's one-step update before re-initialization",
    "T2I-Adapter through diffusers' T2IAdapter and down_intrablock_additional_residuals (diffusers-format "
    "adapter folders), applied only while refining as upstream",
)


def config_from_params(params: Mapping[str, Any], spec_loss_level: int | None) -> ComposerConfig:
    """The sampler configuration from method parameters (``loss_level`` None: the spec's, else 4)."""
    fields = {f.name for f in dataclasses.fields(ComposerConfig)}
    values = {k: v for k, v in params.items() if k in fields and k != "loss_level"}
    level = params.get("loss_level")
    values["loss_level"] = int(level) if level not in (None, "") else (spec_loss_level or 4)
    return ComposerConfig(**values)


class LoraComposer:
    """The method object ``create(params)`` returns."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = dict(params)
        self.adapters = SceneAdapters("lora-composer")

    def generate(self, scene: Scene, seed: int, ctx: RunContext) -> Generation:
        """Make the image of ``scene`` for ``seed`` (the shared pipeline is left as found)."""
        config = config_from_params(self.params, ctx.spec.loss_level)
        refs = adapter_refs(scene, self.params, ctx.assets.base_model_ref(scene.style), "lora-composer")
        pipe = ctx.base_pipeline(scene.style)
        regions = [
            RegionInput(r.box, r.prompt, ctx.concept_lora(r.concept), ctx.concept(r.concept).token_list,
                        r.negative_prompt)
            for r in scene.regions
        ]
        background = ctx.spec.scene_background(scene)
        background_lora = ctx.concept_lora(background.id) if background is not None else None
        features = self.adapters.features(scene, refs, ctx.assets.condition_image, pipe.unet.device, pipe.unet.dtype)
        layout = prepare_layout(pipe, scene.prompt, scene.negative_prompt, regions, background_lora, features)
        latent_shape = (1, pipe.unet.config.in_channels, scene.height // pipe.vae_scale_factor,
                        scene.width // pipe.vae_scale_factor)
        noise = initial_noise(seed, latent_shape)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        merged = nullcontext()
        if background_lora is not None:  # the global path only: UNet weights; region K/V/out stay base
            unet_only = dataclasses.replace(background_lora, text_encoder={}, token_embeddings={})
            merged = lora_merged(pipe.unet, None, [unet_only], [1.0])
        with merged:
            result = Sampler(pipe.unet, scheduler, layout, config)(noise)
        image = decode(pipe, result.latents)
        grid = [box_to_grid(r.box, *_grid(latent_shape, config.loss_level)) for r in scene.regions]
        record = {
            "params": config_record(config),
            "adapters": refs,
            "adapter_note": no_adapter_note(scene),
            "background_concept": background.id if background is not None else None,
            "token_positions": [list(p) for p in layout.token_positions],
            "loss_grid_boxes": [list(b) for b in grid],
            "refine_steps_run": result.log["refine_steps"],
            "early_stop_step": result.log["stop_step"],
            "losses": result.log["losses"],
            "reinit_windows": result.log.get("reinit_windows"),
            "adapter_steps": result.log["adapter_steps"],
            "deviations": list(DEVIATIONS),
        }
        return Generation(image=image, record=record)


def _grid(latent_shape: tuple[int, ...], level: int) -> tuple[int, int]:
    h, w = latent_shape[-2:]
    while level > 1:
        h, w, level = -(-h // 2), -(-w // 2), level // 2
    return h, w


@torch.no_grad()
def decode(pipe: StableDiffusionPipeline, latents: torch.Tensor):
    """VAE-decode latents into a PIL image exactly as StableDiffusionPipeline does."""
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")[0]
