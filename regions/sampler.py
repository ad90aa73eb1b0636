"""The region sampling loop, model-agnostic; a guidance (LoRA-Composer's) may act on the latent each step.

Read top to bottom:

1. Install the region processors (region injection, optional concept region mask) on the UNet.
2. If a guidance is given, it may change the initial latent (LoRA-Composer: latent re-initialization).
3. For each timestep: while the guidance is active, it may update the latent (LoRA-Composer: one
   conditional forward, its losses and a gradient step) and says whether it stays active.
4. Every timestep: a CFG forward (batch [uncond, cond]) and a scheduler step, with the T2I-Adapter
   residuals on every step (``adapter_steps="all"``) or only while the guidance is active ("guided").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from diffusers import UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from bench.boxes import Box
from bench.layers import attention_level, cross_attention_layers, layers_at_level
from regions.controller import Controller, LayerCache, StopForward
from regions.geometry import empty_boxes
from regions.processors import region_processors

ADAPTER_STEPS = ("all", "guided")


@dataclass
class PreparedLayout:
    """Everything text-derived for one image: boxes, caches, token positions, adapter features."""

    boxes: Sequence[Box]
    caches: list[LayerCache]
    encoder_states: torch.Tensor  # [2, 77, D]: what the UNet is handed (processors read their own layer)
    token_positions: Sequence[Sequence[int]] = ()
    adapter_features: list[torch.Tensor] | None = None


@dataclass(frozen=True)
class RegionSettings:
    """The mechanism's knobs.

    ``region_mask``: the concept region mask in self-attention. ``adapter_steps``: T2I-Adapter residuals
    on every step (``all``, Mix-of-Show) or only while the guidance is active (``guided``, LoRA-Composer).
    ``map_level``: the downsampling level whose attention maps :meth:`RegionSampler.conditional_maps`
    returns; ``truncate_maps``: those forwards stop after that level's last layer (exact for the maps).
    """

    num_steps: int = 50
    guidance_scale: float = 7.5
    region_mask: bool = False
    adapter_steps: str = "all"
    map_level: int = 4
    truncate_maps: bool = True

    def __post_init__(self) -> None:
        if self.adapter_steps not in ADAPTER_STEPS:
            raise ValueError(f"adapter_steps: expected one of {list(ADAPTER_STEPS)}, got {self.adapter_steps!r}")


@dataclass
class SampleResult:
    """Final latents and what really happened."""

    latents: torch.Tensor
    log: dict[str, Any] = field(default_factory=dict)


class Guidance(Protocol):
    """What acts on the latent during region sampling (LoRA-Composer's losses and re-initialization)."""

    def start(self, sampler: RegionSampler, latents: torch.Tensor, t: torch.Tensor, log: dict[str, Any]
              ) -> torch.Tensor:
        """The latent to start from (called once, at the first timestep ``t``)."""
        ...

    def step(self, sampler: RegionSampler, i: int, t: torch.Tensor, latents: torch.Tensor, log: dict[str, Any]
             ) -> tuple[torch.Tensor, bool]:
        """The latent before step ``i``'s denoising, and whether the guidance stays active for this step."""
        ...


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """``requires_grad_(False)`` on every parameter for the body, restoring the flags afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class RegionSampler:
    """Samples one prepared layout with region-aware attention (one instance per image)."""

    def __init__(self, unet: UNet2DConditionModel, scheduler: SchedulerMixin, layout: PreparedLayout,
                 settings: RegionSettings, guidance: Guidance | None = None):
        self.unet, self.scheduler, self.layout, self.settings = unet, scheduler, layout, settings
        self.guidance = guidance
        self.regions = len(layout.boxes)
        names = layers_at_level(unet, settings.map_level)
        self.stop_at = names[-1] if (names and settings.truncate_maps) else None
        self.controller: Controller | None = None

    def _forward(self, latents: torch.Tensor, t: torch.Tensor, adapter: bool) -> torch.Tensor | None:
        """One UNet forward in the controller's current mode; None when it was truncated."""
        ctl = self.controller
        assert ctl is not None
        batch = latents.shape[0]
        residuals = None
        if adapter and self.layout.adapter_features is not None:
            residuals = [f.expand(batch, -1, -1, -1).to(latents.dtype) for f in self.layout.adapter_features]
        states = ctl.branch(self.layout.encoder_states)
        ctl.reset_store()
        try:
            return self.unet(latents, t, encoder_hidden_states=states,
                             down_intrablock_additional_residuals=residuals, return_dict=False)[0]
        except StopForward:
            return None

    def conditional_maps(self, latents: torch.Tensor, t: torch.Tensor, cross: bool, self_maps: bool,
                         adapter: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A batch-1 conditional forward storing map-level maps: region maps ``[R, h, w, T]``, self ``[N, N]``."""
        ctl = self.controller
        assert ctl is not None
        ctl.mode, ctl.store_cross, ctl.store_self = "cond", cross, self_maps
        ctl.stop_at = self.stop_at
        try:
            self._forward(self.scheduler.scale_model_input(latents, t), t, adapter)
        finally:
            ctl.mode, ctl.store_cross, ctl.store_self, ctl.stop_at = "cfg", False, False, None
        h, w = ctl.grid(self.settings.map_level)
        cross_map = ctl.store.cross_mean()
        if cross_map is not None:
            cross_map = cross_map.view(self.regions, h, w, -1)
        return cross_map, ctl.store.self_mean()

    def empty_boxes(self, latent_hw: tuple[int, int]) -> list[dict[str, Any]]:
        """Boxes with no cell on an attention grid they are injected at, or on the map grid.

        Such a region reads the global prompt at that layer (injection) or has no map, hence no loss
        and no re-initialization (map grid), as upstream; the log lists them so that no one mistakes
        it for the method at work.
        """
        unet, level = self.unet, self.settings.map_level
        levels = {attention_level(unet, name) for name in cross_attention_layers(unet)} | {level}
        return [
            {"region": e.region, "grid_hw": list(e.grid_hw), "level": e.level, "map_grid": e.level == level}
            for e in empty_boxes(self.layout.boxes, latent_hw, sorted(levels))
        ]

    def __call__(self, noise: torch.Tensor) -> SampleResult:
        """Sample from ``noise`` ``[1, 4, h, w]``; returns the final latents and the log."""
        cfg = self.settings
        device, dtype = self.unet.device, self.unet.dtype
        self.scheduler.set_timesteps(cfg.num_steps, device=device)
        latents = noise.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        self.controller = Controller(
            boxes=list(self.layout.boxes),
            latent_hw=(latents.shape[-2], latents.shape[-1]),
            layers=self.layout.caches,
            region_mask=cfg.region_mask,
            map_level=cfg.map_level,
        )
        log: dict[str, Any] = {"adapter_steps": [], "empty_boxes": self.empty_boxes(self.controller.latent_hw)}
        with region_processors(self.unet, self.controller), frozen(self.unet):
            timesteps = self.scheduler.timesteps
            if self.guidance is not None:
                latents = self.guidance.start(self, latents, timesteps[0], log)
            active = True
            for i, t in enumerate(timesteps):
                if self.guidance is not None and active:
                    latents, active = self.guidance.step(self, i, t, latents, log)
                adapter = active or cfg.adapter_steps == "all"
                if adapter and self.layout.adapter_features is not None:
                    log["adapter_steps"].append(i)
                with torch.no_grad():
                    latents = self._denoise(latents, t, adapter=adapter)
        return SampleResult(latents=latents, log=log)

    def _denoise(self, latents: torch.Tensor, t: torch.Tensor, adapter: bool) -> torch.Tensor:
        """CFG forward on ``[z, z]`` and one scheduler step."""
        assert self.controller is not None
        self.controller.mode = "cfg"
        model_input = self.scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_pred = self._forward(model_input, t, adapter)
        assert noise_pred is not None
        uncond, cond = noise_pred.chunk(2)
        noise_pred = uncond + self.settings.guidance_scale * (cond - uncond)
        return self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
