"""The text stage (no grad): encode the global and region prompts once and build the layer caches.

One explicit list of regions (box, prompts, concept LoRA, concept tokens) in region order: token
positions come from the tokenizer (not whitespace words) and stay with their region (the official
code mixes LoRA-folder order with region order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from bench.boxes import Box
from bench.layers import cross_attention_layers
from bench.lora.canonical import ConceptLora
from bench.prompts import LayerwiseTextEncoder
from regions.sampler import PreparedLayout
from regions.sources import ConceptDeltas, build_layer_caches


@dataclass(frozen=True)
class RegionInput:
    """One region: canonical box, prompts, the concept's LoRA and its tokens (e.g. ``('<catA1>', '<catA2>')``)."""

    box: Box
    prompt: str
    lora: ConceptLora
    tokens: Sequence[str]
    negative_prompt: str = ""


@torch.no_grad()
def prepare_layout(
    pipe: StableDiffusionPipeline,
    prompt: str,
    negative_prompt: str = "",
    regions: Sequence[RegionInput] = (),
    background: ConceptLora | None = None,
    adapter_features: list[torch.Tensor] | None = None,
) -> PreparedLayout:
    """Encode every prompt once (each region with its own concept's text encoder LoRA and embeddings).

    Must run while the UNet holds base weights (before a background LoRA is merged).
    """
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    layers = len(cross_attention_layers(pipe.unet))
    bg = [background] if background is not None else []
    positive = encoder.encode(prompt, concepts=bg, text_lora=background, num_layers=layers)
    negative = encoder.encode(negative_prompt, num_layers=layers)
    global_embeds = torch.stack([negative, positive])  # [2, L, T, D]
    region_embeds, positions = None, []
    if regions:
        region_embeds = torch.stack([
            torch.stack([
                encoder.encode(r.negative_prompt, text_lora=r.lora, num_layers=layers),
                encoder.encode(r.prompt, concepts=[r.lora], text_lora=r.lora, num_layers=layers),
            ])
            for r in regions
        ])  # [R, 2, L, T, D]
        positions = [encoder.token_positions(r.prompt, list(r.tokens)) for r in regions]
    caches = build_layer_caches(pipe.unet, global_embeds, region_embeds, ConceptDeltas([r.lora for r in regions]),
                                background)
    return PreparedLayout(
        boxes=[r.box for r in regions],
        caches=caches,
        encoder_states=global_embeds[:, 0].to(pipe.unet.dtype),
        token_positions=positions,
        adapter_features=adapter_features,
    )
