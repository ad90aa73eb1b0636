"""Mix-of-Show's regionally controllable sampling: the region mechanism with a fused model as the source.

The region mechanism (:mod:`regions`) replaces the cross-attention output inside each box by
attention to that region's keys/values, averaged where boxes overlap, and keeps the global output
elsewhere. Mix-of-Show's sampler (research branch, ``regionally_controllable_sample_util.py``) is that
rewrite with the *fused* model's own ``to_k/to_v/to_out.0`` as the source of the region keys/values
(:class:`regions.sources.LiveWeights`), applied to the region prompt encoded by the fused text
encoder with every fused token; LoRA-Composer's source is base weights plus each concept's delta.

Sampling is :class:`regions.sampler.RegionSampler` without a guidance: no losses, no latent
re-initialization, no self-attention region mask (Mix-of-Show leaves self-attention untouched), and
adapter residuals on every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from bench.boxes import Box
from bench.layers import cross_attention_layers
from bench.lora.canonical import ConceptLora
from bench.prompts import LayerwiseTextEncoder
from regions.sampler import PreparedLayout, RegionSampler, RegionSettings
from regions.sources import LiveWeights, build_layer_caches


@dataclass(frozen=True)
class RegionPrompt:
    """One Mix-of-Show region: canonical box, region prompt and region negative prompt."""

    box: Box
    prompt: str
    negative_prompt: str = ""


def mixofshow_settings(num_steps: int = 50, guidance_scale: float = 7.5) -> RegionSettings:
    """The region mechanism as Mix-of-Show uses it: no self-attention mask, adapters on every step."""
    return RegionSettings(num_steps=num_steps, guidance_scale=guidance_scale, region_mask=False, adapter_steps="all")


@torch.no_grad()
def prepare_fused_layout(
    pipe: StableDiffusionPipeline,
    tokens: ConceptLora,
    prompt: str,
    negative_prompt: str,
    regions: Sequence[RegionPrompt],
    adapter_features: list[torch.Tensor] | None = None,
) -> PreparedLayout:
    """Encode the context and region prompts and build the caches; ``pipe`` must hold the fused weights.

    ``tokens`` carries every fused concept token's layer-wise embedding. The region unconditional
    branch is the region's negative prompt, as upstream.
    """
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    layers = len(cross_attention_layers(pipe.unet))
    global_embeds = torch.stack([encoder.encode(negative_prompt, num_layers=layers),
                                 encoder.encode(prompt, concepts=[tokens], num_layers=layers)])
    region_embeds = None
    if regions:
        region_embeds = torch.stack([
            torch.stack([encoder.encode(r.negative_prompt, num_layers=layers),
                         encoder.encode(r.prompt, concepts=[tokens], num_layers=layers)])
            for r in regions
        ])
    caches = build_layer_caches(pipe.unet, global_embeds, region_embeds, LiveWeights(len(regions)))
    return PreparedLayout(boxes=[r.box for r in regions], caches=caches,
                          encoder_states=global_embeds[:, 0].to(pipe.unet.dtype),
                          adapter_features=adapter_features)


def regional_sample(pipe: StableDiffusionPipeline, layout: PreparedLayout, noise: torch.Tensor,
                    num_steps: int, guidance_scale: float, scheduler: Any = None) -> torch.Tensor:
    """Sample latents from ``noise`` with the region rewrite on every cross-attention layer, every step.

    ``scheduler``: a fresh scheduler to sample with (default: a copy of the pipeline's).
    """
    if scheduler is None:
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    return RegionSampler(pipe.unet, scheduler, layout, mixofshow_settings(num_steps, guidance_scale))(noise).latents
