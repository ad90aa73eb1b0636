"""The LoRA-Composer sampling loop (official ``Regionally_T2IAdaptor_Sample``), model-agnostic.

Read top to bottom:

1. Install the composer processors (region injection, concept region mask) on the UNet.
2. Latent re-initialization: one conditional forward at ``t = T``, window search, patch move.
3. For each timestep: while refining, one conditional forward (truncated after the loss-level
   layers), the guidance loss and one gradient step on the latent; the refinement stops for good
   after ``max_refine_steps`` or when the loss rises (from ``early_stop_from`` on).
4. Every timestep: a CFG forward (batch [uncond, cond]) and a scheduler step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from bench.boxes import Box
from composer.attention import Controller, LayerCache, StopForward, composer_processors, loss_layers
from composer.losses import LossWeights, composer_loss
from composer.reinit import reinitialize_latents


@dataclass(frozen=True)
class ComposerConfig:
    """Every knob of the sampler; defaults are the official ones."""

    num_steps: int = 50
    guidance_scale: float = 7.5
    concept_enhancement: bool = True  # CE: Gaussian top-k enhancement + fill losses
    concept_isolation: bool = True  # CI: self-attention region mask + region perceptual loss
    latent_reinit: bool = True  # LR
    loss_level: int = 4  # latent / 4 = image / 32, as upstream
    enhancement_weight: float = 8.0
    fill_weight: float = 2.0
    region_weight: float = 10.0
    top_k_ratio: float = 0.2
    gaussian_weight: bool = True
    fill_loss: bool = True
    region_loss: bool = True
    self_attn_mask: bool = True
    step_size: float = 20.0
    step_size_end_ratio: float = 0.5  # lr_i = step_size * sqrt(linspace(1, ratio, num_steps)[i])
    max_refine_steps: int = 26
    early_stop_from: int = 5
    reinit_update: bool = False  # the paper's one gradient step before re-init (the code has none)
    truncate_refinement: bool = True  # stop refinement forwards after the last loss-level layer (exact)

    def loss_weights(self) -> LossWeights:
        """The loss switches implied by CE / CI and the finer switches."""
        return LossWeights(
            enhancement=self.enhancement_weight,
            fill=self.fill_weight,
            region=self.region_weight,
            top_k_ratio=self.top_k_ratio,
            gaussian_weight=self.gaussian_weight,
            use_enhancement=self.concept_enhancement,
            use_fill=self.concept_enhancement and self.fill_loss,
            use_region=self.concept_isolation and self.region_loss,
        )

    def step_sizes(self) -> torch.Tensor:
        """The official step-size schedule ``step_size * sqrt(linspace(1, end_ratio, num_steps))``."""
        return self.step_size * torch.linspace(1.0, self.step_size_end_ratio, self.num_steps).sqrt()


@dataclass
class PreparedLayout:
    """Everything text-derived for one image: boxes, caches, token positions, adapter features."""

    boxes: Sequence[Box]
    caches: list[LayerCache]
    encoder_states: torch.Tensor  # [2, 77, D]: what the UNet is handed (processors read their own layer)
    token_positions: Sequence[Sequence[int]] = ()
    adapter_features: list[torch.Tensor] | None = None


@dataclass
class ComposerResult:
    """Final latents and what really happened."""

    latents: torch.Tensor
    log: dict[str, Any] = field(default_factory=dict)


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


class Sampler:
    """Runs the composer loop for one prepared layout (one instance per image)."""

    def __init__(self, unet: UNet2DConditionModel, scheduler: SchedulerMixin, layout: PreparedLayout,
                 config: ComposerConfig):
        self.unet, self.scheduler, self.layout, self.config = unet, scheduler, layout, config
        self.weights = config.loss_weights()
        self.regions = len(layout.boxes)
        names = loss_layers(unet, config.loss_level)
        if self.regions and not names:
            raise ValueError(f"lora-composer parameter 'loss_level': {config.loss_level} has no cross-attention "
                             "layer in this UNet; expected a downsampling factor such as 1, 2 or 4")
        self.stop_at = names[-1] if (names and config.truncate_refinement) else None
        self.controller: Controller | None = None

    @property
    def losses_on(self) -> bool:
        """Whether any guidance loss is active (otherwise no refinement forward runs)."""
        w = self.weights
        return self.regions > 0 and (w.use_enhancement or w.use_fill or w.use_region)

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
        """A batch-1 conditional forward storing loss-level maps: region maps ``[R, h, w, T]``, self ``[N, N]``."""
        ctl = self.controller
        assert ctl is not None
        ctl.mode, ctl.store_cross, ctl.store_self = "cond", cross, self_maps
        ctl.stop_at = self.stop_at
        try:
            self._forward(self.scheduler.scale_model_input(latents, t), t, adapter)
        finally:
            ctl.mode, ctl.store_cross, ctl.store_self, ctl.stop_at = "cfg", False, False, None
        h, w = ctl.grid(self.config.loss_level)
        cross_map = ctl.store.cross_mean()
        if cross_map is not None:
            cross_map = cross_map.view(self.regions, h, w, -1)
        return cross_map, ctl.store.self_mean()

    def loss(self, cross: torch.Tensor | None, self_map: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """The guidance loss on the stored maps."""
        ctl = self.controller
        assert ctl is not None
        geo = ctl.geometry(self.config.loss_level)
        return composer_loss(cross, self_map, geo.grid_boxes, self.layout.token_positions, self.weights,
                             geo.h, geo.w)

    def refine(self, latents: torch.Tensor, t: torch.Tensor, step_size: float, adapter: bool
               ) -> tuple[torch.Tensor, float, dict]:
        """One refinement: conditional forward, loss, ``z - step_size * dL/dz``."""
        w = self.weights
        with torch.enable_grad():
            latents = latents.detach().requires_grad_(True)
            cross, self_map = self.conditional_maps(latents, t, w.use_enhancement or w.use_fill, w.use_region,
                                                    adapter)
            loss, parts = self.loss(cross, self_map)
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, latents)
                latents = latents - step_size * grad.to(latents.dtype)
        return latents.detach(), float(loss.detach()), parts

    def reinitialize(self, latents: torch.Tensor, t: torch.Tensor, log: dict) -> torch.Tensor:
        """Latent re-initialization (optionally after the paper's one gradient step)."""
        if self.config.reinit_update and self.losses_on:
            latents, loss, _ = self.refine(latents, t, float(self.config.step_sizes()[0]), adapter=True)
            log["reinit_update_loss"] = loss
        with torch.no_grad():
            cross, _ = self.conditional_maps(latents, t, cross=True, self_maps=False, adapter=True)
        assert self.controller is not None and cross is not None
        geo = self.controller.geometry(self.config.loss_level)
        latents, windows = reinitialize_latents(latents, cross, geo.grid_boxes, self.layout.token_positions,
                                                self.config.loss_level)
        log["reinit_windows"] = windows
        return latents

    def __call__(self, noise: torch.Tensor) -> ComposerResult:
        """Sample from ``noise`` ``[1, 4, h, w]``; returns the final latents and the log."""
        cfg = self.config
        device, dtype = self.unet.device, self.unet.dtype
        self.scheduler.set_timesteps(cfg.num_steps, device=device)
        latents = noise.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        self.controller = Controller(
            boxes=list(self.layout.boxes),
            latent_hw=(latents.shape[-2], latents.shape[-1]),
            layers=self.layout.caches,
            region_mask=cfg.concept_isolation and cfg.self_attn_mask,
            loss_level=cfg.loss_level,
        )
        log: dict[str, Any] = {"losses": [], "refine_steps": 0, "stop_step": None, "adapter_steps": []}
        step_sizes = cfg.step_sizes()
        with composer_processors(self.unet, self.controller), frozen(self.unet):
            timesteps = self.scheduler.timesteps
            if cfg.latent_reinit and self.regions:
                latents = self.reinitialize(latents, timesteps[0], log)
            refining, previous = True, 1e3
            for i, t in enumerate(timesteps):
                if refining:
                    loss = 0.0
                    if self.losses_on:
                        latents, loss, parts = self.refine(latents, t, float(step_sizes[i]), adapter=True)
                        log["losses"].append({"step": i, "total": loss, **parts})
                        log["refine_steps"] += 1
                    if (loss > previous and i >= cfg.early_stop_from) or i >= cfg.max_refine_steps - 1:
                        refining = False
                        log["stop_step"] = i
                    else:
                        previous = loss
                if refining and self.layout.adapter_features is not None:
                    log["adapter_steps"].append(i)
                with torch.no_grad():
                    latents = self._denoise(latents, t, adapter=refining)
        return ComposerResult(latents=latents, log=log)

    def _denoise(self, latents: torch.Tensor, t: torch.Tensor, adapter: bool) -> torch.Tensor:
        """CFG forward on ``[z, z]`` and one scheduler step."""
        assert self.controller is not None
        self.controller.mode = "cfg"
        model_input = self.scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_pred = self._forward(model_input, t, adapter)
        assert noise_pred is not None
        uncond, cond = noise_pred.chunk(2)
        noise_pred = uncond + self.config.guidance_scale * (cond - uncond)
        return self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]


def config_record(config: ComposerConfig) -> dict[str, Any]:
    """The configuration as plain data for a record."""
    return asdict(config)
