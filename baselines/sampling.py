"""Plain text-to-image sampling with layer-wise (ED-LoRA) prompt embeddings, shared by the LoRA baselines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from bench.layers import cross_attention_layers
from bench.lora.canonical import ConceptLora
from bench.methods import check_finite
from bench.prompts import LayerwiseState, LayerwiseTextEncoder, install_layerwise
from bench.seeds import initial_noise


@torch.no_grad()
def encode_pair(
    pipe: StableDiffusionPipeline,
    prompt: str,
    negative_prompt: str,
    concepts: Sequence[ConceptLora],
    text_lora: ConceptLora | None = None,
) -> torch.Tensor:
    """``[2, layers, 77, D]`` (negative, positive), concept tokens bound per layer, through ``text_lora`` if given."""
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    layers = len(cross_attention_layers(pipe.unet))
    positive = encoder.encode(prompt, concepts=concepts, text_lora=text_lora, num_layers=layers)
    return torch.stack([encoder.encode(negative_prompt, text_lora=text_lora, num_layers=layers), positive])


def sample_layerwise(
    pipe: StableDiffusionPipeline,
    embeddings: torch.Tensor,
    seed: int,
    width: int,
    height: int,
    steps: int,
    guidance_scale: float,
) -> Image.Image:
    """Sample with diffusers' own pipeline while every cross-attention layer reads its own embedding row."""
    device = pipe.unet.device
    embeddings = embeddings.to(device=device, dtype=pipe.unet.dtype)
    latents = initial_noise(seed, (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor,
                                   width // pipe.vae_scale_factor), dtype=pipe.unet.dtype).to(device)
    # diffusers skips classifier-free guidance at guidance_scale <= 1: the batch is then the positive prompt only.
    layerwise = embeddings if guidance_scale > 1 else embeddings[1:2]
    with install_layerwise(pipe.unet, LayerwiseState(layerwise)):
        result = pipe(
            prompt_embeds=embeddings[1:2, 0],
            negative_prompt_embeds=embeddings[0:1, 0],
            latents=latents,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            output_type="np",
        )
    array = np.asarray(result.images[0])
    check_finite(torch.from_numpy(array), "decoded image")
    return Image.fromarray((array.clip(0, 1) * 255).round().astype("uint8"))
