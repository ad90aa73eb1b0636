"""LoRA-Composer as a bench method: scene + seed + run context -> image + record."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from bench.boxes import box_to_grid
from bench.layers import grid_at_level
from bench.lora.apply import lora_merged
from bench.methods import Generation
from bench.pipelines import decode
from bench.seeds import initial_noise
from bench.spec import Scene
from composer.config import ComposerConfig
from composer.guidance import composer_sampler
from composer.layout import RegionInput, prepare_layout
from regions.adapters import SceneAdapters, adapter_refs, no_adapter_note

if TYPE_CHECKING:
    from bench.context import RunContext

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
            result = composer_sampler(pipe.unet, scheduler, layout, config)(noise)
        image = decode(pipe, result.latents)
        grid = [box_to_grid(r.box, *grid_at_level(latent_shape[-2:], config.loss_level)) for r in scene.regions]
        record = {
            "loss_level": config.loss_level,
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
        }
        return Generation(image=image, record=record)
