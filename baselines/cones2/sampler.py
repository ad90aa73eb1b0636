"""Cones2's sampler: first-order LMS (Euler) with separate cond/uncond calls and self-recurrence.

Upstream steps ``LMSDiscreteScheduler`` with ``order=1`` (an Euler step) and repeats each guided
step once after re-noising to the step's own noise level. The update is written out here from the
schedule's sigmas, because a stateful scheduler's step index would desynchronise on the repeated
step (and diffusers' LMS needs scipy). The sigmas come from ``EulerDiscreteScheduler``, which shares
LMS's schedule; the guidance sigma comes from a separate SD-betas schedule with ``guidance_steps``.
"""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

from baselines.cones2.attention import Cones2State

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def euler_update(
    latents: torch.Tensor, model_output: torch.Tensor, sigma: float, sigma_next: float, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """One first-order step from ``sigma`` to ``sigma_next`` (LMS with order 1)."""
    if prediction_type == "epsilon":
        x0 = latents - sigma * model_output
    elif prediction_type == "v_prediction":
        x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + latents / (sigma**2 + 1)
    else:
        raise ValueError(f"Cones2 sampler: unsupported prediction_type {prediction_type!r}")
    derivative = (latents - x0) / sigma
    return latents + derivative * (sigma_next - sigma)


@torch.no_grad()
def cones2_sample(
    unet: UNet2DConditionModel,
    scheduler_config: dict,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    weights: dict[int, torch.Tensor],
    noise: torch.Tensor,
    steps: int = 50,
    guidance_scale: float = 7.5,
    guidance_steps: int = 50,
    guidance_weight: float = 0.08,
    self_recurrence: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` (unscaled N(0, 1) latents) with Cones2's layout guidance; returns clean latents.

    The UNet must carry :class:`Cones2AttnProcessor` on its attention layers.
    """
    # explicit prediction_type: from_config drops keys listed in a config's _use_default_values
    prediction_type = scheduler_config.get("prediction_type", "epsilon")
    schedule = EulerDiscreteScheduler.from_config(scheduler_config, prediction_type=prediction_type)
    schedule.set_timesteps(steps)
    sigmas = [float(s) for s in schedule.sigmas]
    guidance_steps = min(guidance_steps, steps)
    guide_sigmas: list[float] = []
    if guidance_steps > 0:
        guide = EulerDiscreteScheduler(**SD_BETAS)
        guide.set_timesteps(guidance_steps)
        guide_sigmas = [float(s) for s in guide.sigmas]
    device, dtype = unet.device, unet.dtype
    latents = noise.to(device, torch.float32) * float(schedule.init_noise_sigma)
    weights = {n: w.to(device) for n, w in weights.items()}
    cond, uncond = cond.to(device, dtype), uncond.to(device, dtype)
    for i, t in enumerate(schedule.timesteps):
        guided = i < guidance_steps
        loops = 2 if guided and self_recurrence else 1
        for k in range(loops):
            model_input = (latents / (sigmas[i] ** 2 + 1) ** 0.5).to(dtype)
            state = Cones2State(weights, guide_sigmas[i], guidance_weight) if guided else None
            eps_cond = unet(model_input, t, encoder_hidden_states=cond, cross_attention_kwargs={"cones2": state}).sample
            eps_uncond = unet(
                model_input, t, encoder_hidden_states=uncond, cross_attention_kwargs={"cones2": None}
            ).sample
            eps = (eps_uncond + guidance_scale * (eps_cond - eps_uncond)).float()
            latents = euler_update(latents, eps, sigmas[i], sigmas[i + 1], prediction_type)
            if k == 0 and loops > 1:
                renoise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(device)
                latents = latents + (sigmas[i] ** 2 - sigmas[i + 1] ** 2) ** 0.5 * renoise
    return latents
