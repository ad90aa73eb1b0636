"""Mix-of-Show's regionally controllable sampling, as LoRA-Composer's region mechanism with a fused source.

LoRA-Composer's region-aware injection (:mod:`composer.attention`) replaces the cross-attention
output inside each box by attention to that region's keys/values, averaged where boxes overlap, and
keeps the global output elsewhere. Mix-of-Show's sampler (research branch,
``regionally_controllable_sample_util.py``) is the same rewrite; only the source of the region
keys/values differs:

- LoRA-Composer: base ``to_k/to_v/to_out.0`` plus each concept's low-rank delta;
- Mix-of-Show: the *fused* model's own ``to_k/to_v/to_out.0`` (no per-concept delta), applied to the
  region prompt encoded by the fused text encoder with every fused token.

So the caches come from :func:`composer.caches.build_layer_caches` with a weight-free concept per
region, and sampling is :class:`composer.pipeline.Sampler` with every LoRA-Composer addition off:
no guidance losses (CE), no self-attention region mask (CI; Mix-of-Show leaves self-attention
untouched), no latent re-initialization (LR), and adapter residuals on every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from bench.boxes import Box
from bench.layers import cross_attention_layers
from bench.lora.canonical import ConceptLora
from bench.textual import LayerwiseTextEncoder
from composer.caches import build_layer_caches
from composer.pipeline import ComposerConfig, PreparedLayout, Sampler

FUSED_SOURCE = ConceptLora(source="fused model", format="fused")  # no deltas: region K/V from the live weights


@dataclass(frozen=True)
class RegionPrompt:
    """One Mix-of-Show region: canonical box, region prompt and region negative prompt."""

    box: Box
    prompt: str
    negative_prompt: str = ""


def mixofshow_config(num_steps: int = 50, guidance_scale: float = 7.5) -> ComposerConfig:
    """The composer sampler configured as Mix-of-Show's: CE, CI and LR off, adapters on every step."""
    return ComposerConfig(num_steps=num_steps, guidance_scale=guidance_scale, concept_enhancement=False,
                          concept_isolation=False, latent_reinit=False, max_refine_steps=num_steps + 1)


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
    caches = build_layer_caches(pipe.unet, global_embeds, region_embeds, [FUSED_SOURCE] * len(regions))
    return PreparedLayout(boxes=[r.box for r in regions], caches=caches,
                          encoder_states=global_embeds[:, 0].to(pipe.unet.dtype),
                          adapter_features=adapter_features)


def regional_sample(pipe: StableDiffusionPipeline, layout: PreparedLayout, noise: torch.Tensor,
                    num_steps: int, guidance_scale: float) -> torch.Tensor:
    """Sample latents from ``noise`` with the region rewrite on every cross-attention layer, every step."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    return Sampler(pipe.unet, scheduler, layout, mixofshow_config(num_steps, guidance_scale))(noise).latents
