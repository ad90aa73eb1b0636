"""LoRA-Composer as a bench method: scene + seed + run context -> image + record."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
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


class EmptyBoxWarning(UserWarning):
    """A region's box has no cell on the loss grid or on an attention grid it is injected at."""


def empty_box_message(scene_id: str, empty: Sequence[Mapping[str, Any]], regions: Sequence[str],
                      guided: bool = True) -> str:
    """One line per scene: which regions are empty on which grids, what that means, and the remedy.

    ``guided``: whether losses or re-initialization read the loss grid (not in the ``none`` ablation).
    """
    def where(entries: list[Mapping[str, Any]]) -> str:
        grids: dict[tuple[int, int], list[str]] = {}
        for e in entries:
            grids.setdefault(tuple(e["grid_hw"]), []).append(regions[e["region"]])
        return "; ".join(f"{h}x{w}: {', '.join(names)}" for (h, w), names in grids.items())

    loss = [e for e in empty if e["map_grid"] and guided]
    other = [e for e in empty if e not in loss]
    parts = []
    if loss:
        parts.append(f"empty on the loss grid ({where(loss)}): no loss and no re-initialization for them, as "
                     "upstream; lora-composer.adaptive_loss_level=true moves the loss to a grid where every box "
                     "keeps a cell")
    if other:
        parts.append(f"empty on attention grids ({where(other)}): those layers read the global prompt there")
    return f"lora-composer: scene '{scene_id}': boxes " + "; ".join(parts) + " (listed in each record's empty_boxes)"


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
        self._warned: set[str] = set()  # scenes whose empty boxes were already reported

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
            result = composer_sampler(pipe.unet, scheduler, layout, config, latent_shape[-2:])(noise)
        image = decode(pipe, result.latents)
        level = result.log["loss_level"]  # the scene's (adaptive_loss_level may choose a finer one)
        grid = [box_to_grid(r.box, *grid_at_level(latent_shape[-2:], level)) for r in scene.regions]
        empty = result.log["empty_boxes"]
        if empty and scene.id not in self._warned:
            self._warned.add(scene.id)
            names = [f"{r}:{region.concept}" for r, region in enumerate(scene.regions)]
            message = empty_box_message(scene.id, empty, names, result.log["loss_grid_read"])
            warnings.warn(EmptyBoxWarning(message), stacklevel=2)
        record = {
            "loss_level": level,
            "loss_level_requested": config.loss_level,
            "adapters": refs,
            "adapter_note": no_adapter_note(scene),
            "background_concept": background.id if background is not None else None,
            "token_positions": [list(p) for p in layout.token_positions],
            "loss_grid_boxes": [list(b) for b in grid],
            "empty_boxes": empty,
            "refine_steps_run": result.log["refine_steps"],  # gradient steps actually taken
            "refine_forwards_run": result.log["refine_forwards"],
            "early_stop_step": result.log["stop_step"],
            "losses": result.log["losses"],
            "reinit_windows": result.log.get("reinit_windows"),
            "adapter_steps": result.log["adapter_steps"],
        }
        return Generation(image=image, record=record)
