"""LoRA-Composer on the region mechanism: its guidance (losses, refinement, re-initialization) and sampler.

The official ``Regionally_T2IAdaptor_Sample`` is :class:`regions.sampler.RegionSampler` with the
concept region mask on, T2I-Adapter residuals only while refining, and this guidance:

1. Latent re-initialization: one conditional forward at ``t = T``, window search, patch move.
2. For each timestep, while refining: one conditional forward (truncated after the loss-level
   layers), the guidance loss and one gradient step on the latent; the refinement stops for good
   after ``max_refine_steps`` or when the loss rises (from ``early_stop_from`` on).

A box with no cell on the loss grid has no loss (upstream's behaviour): when no box has one, the loss
is a constant 0 and no gradient step is taken. The log counts refinement forwards and gradient steps
apart (``refine_forwards`` / ``refine_steps``) so that such a run is not mistaken for a refined one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from bench.boxes import Box
from bench.layers import layers_at_level
from composer.config import ComposerConfig
from composer.losses import composer_loss
from composer.reinit import reinitialize_latents
from regions.geometry import empty_boxes
from regions.sampler import PreparedLayout, RegionSampler, RegionSettings, SampleResult


def region_settings(config: ComposerConfig) -> RegionSettings:
    """The region mechanism as LoRA-Composer uses it."""
    return RegionSettings(
        num_steps=config.num_steps,
        guidance_scale=config.guidance_scale,
        region_mask=config.concept_isolation and config.self_attn_mask,
        adapter_steps="guided",
        map_level=config.loss_level,
        truncate_maps=config.truncate_refinement,
    )


class ComposerGuidance:
    """Concept enhancement, concept isolation and latent re-initialization (:class:`regions.sampler.Guidance`)."""

    def __init__(self, config: ComposerConfig, regions: int):
        self.config = config
        self.weights = config.loss_weights()
        self.regions = regions
        self.step_sizes = config.step_sizes()
        self.previous = 1e3

    @property
    def losses_on(self) -> bool:
        """Whether any guidance loss is active (otherwise no refinement forward runs)."""
        w = self.weights
        return self.regions > 0 and (w.use_enhancement or w.use_fill or w.use_region)

    def loss(self, sampler: RegionSampler, cross: torch.Tensor | None, self_map: torch.Tensor | None
             ) -> tuple[torch.Tensor, dict]:
        """The guidance loss on the stored maps."""
        assert sampler.controller is not None
        geo = sampler.controller.geometry(self.config.loss_level)
        return composer_loss(cross, self_map, geo.grid_boxes, sampler.layout.token_positions, self.weights,
                             geo.h, geo.w)

    def refine(self, sampler: RegionSampler, latents: torch.Tensor, t: torch.Tensor, step_size: float,
               adapter: bool) -> tuple[torch.Tensor, float, dict, bool]:
        """One refinement: conditional forward, loss, ``z - step_size * dL/dz``; the last item says whether
        a gradient step was taken (not when no box has a cell on the loss grid: the loss is then 0)."""
        w = self.weights
        with torch.enable_grad():
            latents = latents.detach().requires_grad_(True)
            cross, self_map = sampler.conditional_maps(latents, t, w.use_enhancement or w.use_fill, w.use_region,
                                                       adapter)
            loss, parts = self.loss(sampler, cross, self_map)
            stepped = loss.requires_grad
            if stepped:
                (grad,) = torch.autograd.grad(loss, latents)
                latents = latents - step_size * grad.to(latents.dtype)
        return latents.detach(), float(loss.detach()), parts, stepped

    def start(self, sampler: RegionSampler, latents: torch.Tensor, t: torch.Tensor, log: dict[str, Any]
              ) -> torch.Tensor:
        """Latent re-initialization (optionally after the paper's one gradient step), when LR is on."""
        log.update({"losses": [], "refine_steps": 0, "refine_forwards": 0, "stop_step": None,
                    "loss_level": self.config.loss_level,
                    "loss_grid_read": bool(self.regions) and (self.losses_on or self.config.latent_reinit)})
        if not (self.config.latent_reinit and self.regions):
            return latents
        if self.config.reinit_update and self.losses_on:
            latents, loss, _, stepped = self.refine(sampler, latents, t, float(self.step_sizes[0]), adapter=True)
            log["reinit_update_loss"] = loss
            log["reinit_update_step"] = stepped
        with torch.no_grad():
            cross, _ = sampler.conditional_maps(latents, t, cross=True, self_maps=False, adapter=True)
        assert sampler.controller is not None and cross is not None
        geo = sampler.controller.geometry(self.config.loss_level)
        latents, windows = reinitialize_latents(latents, cross, geo.grid_boxes, sampler.layout.token_positions,
                                                self.config.loss_level)
        log["reinit_windows"] = windows
        return latents

    def step(self, sampler: RegionSampler, i: int, t: torch.Tensor, latents: torch.Tensor, log: dict[str, Any]
             ) -> tuple[torch.Tensor, bool]:
        """One refinement step while refining; stops for good at ``max_refine_steps`` or when the loss rises."""
        cfg = self.config
        loss = 0.0
        if self.losses_on:
            latents, loss, parts, stepped = self.refine(sampler, latents, t, float(self.step_sizes[i]), adapter=True)
            log["losses"].append({"step": i, "total": loss, "gradient_step": stepped, **parts})
            log["refine_forwards"] += 1
            log["refine_steps"] += int(stepped)
        if (loss > self.previous and i >= cfg.early_stop_from) or i >= cfg.max_refine_steps - 1:
            log["stop_step"] = i
            return latents, False
        self.previous = loss
        return latents, True


def loss_level_for(unet: UNet2DConditionModel, boxes: list[Box], latent_hw: tuple[int, int],
                   config: ComposerConfig) -> int:
    """The loss level of a scene: ``config.loss_level``, or with ``adaptive_loss_level`` the coarsest level at or
    below it (halving, while the UNet has cross-attention layers there) at which every box keeps a cell.

    When even the finest such level leaves a box empty, that level (the fewest empty boxes) is used.
    """
    level = config.loss_level
    if not config.adaptive_loss_level:
        return level
    while empty_boxes(boxes, latent_hw, [level]) and level > 1 and layers_at_level(unet, level // 2):
        level //= 2
    return level


def composer_sampler(unet: UNet2DConditionModel, scheduler: SchedulerMixin, layout: PreparedLayout,
                     config: ComposerConfig, latent_hw: tuple[int, int] | None = None) -> RegionSampler:
    """The LoRA-Composer sampler for one prepared layout (call it with the initial noise).

    ``latent_hw`` (the latent's size) is needed with ``adaptive_loss_level``, which picks the loss level per
    scene (:func:`loss_level_for`); the sampler's ``guidance.config`` holds the level used.
    """
    regions = len(layout.boxes)
    if config.adaptive_loss_level and regions:
        if latent_hw is None:
            raise ValueError("lora-composer: adaptive_loss_level needs the latent size (latent_hw) of the scene")
        config = dataclasses.replace(config, loss_level=loss_level_for(unet, list(layout.boxes), latent_hw, config))
    if regions and not layers_at_level(unet, config.loss_level):
        raise ValueError(f"lora-composer parameter 'loss_level': {config.loss_level} has no cross-attention "
                         "layer in this UNet; expected a downsampling factor such as 1, 2 or 4")
    return RegionSampler(unet, scheduler, layout, region_settings(config), ComposerGuidance(config, regions))


__all__ = ["ComposerGuidance", "SampleResult", "composer_sampler", "loss_level_for", "region_settings"]
