"""Tiny SD1.5-architecture components built from configs with fixed seeds (no network).

Same layer names and 16 cross-attention layers as SD1.5, tiny widths. Real weights are the
user's; the code path is the same. The tiny T2I-Adapters (``builtin:tiny-t2i-sketch`` /
``builtin:tiny-t2i-pose``) fit the tiny UNet as TencentARC's SD1.4 adapters fit SD1.5.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    T2IAdapter,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from bench.tokenizer import build_clip_tokenizer

TINY_TEXT_DIM = 32


def tiny_unet_config(cross_attention_dim: int = TINY_TEXT_DIM) -> dict:
    """SD1.5 layout (3 cross-attention down blocks + 1 plain, mirrored up) at tiny widths."""
    return dict(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def tiny_vae_config() -> dict:
    """A 4-level VAE with scale factor 8, like SD's."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        scaling_factor=0.18215,
    )


def sd_scheduler() -> DPMSolverMultistepScheduler:
    """The DPM-Solver++ scheduler with SD1.x betas."""
    return DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


def small_clip_text_config(tokenizer: Any, hidden: int, intermediate: int, layers: int) -> CLIPTextConfig:
    """A small SD1.x-style ``CLIPTextConfig`` (4 heads, 77 positions, quick_gelu) over ``tokenizer``'s vocabulary."""
    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=hidden,
        hidden_act="quick_gelu",
    )


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Build the tiny SD1.5-layout pipeline with deterministic random weights."""
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(small_clip_text_config(tokenizer, TINY_TEXT_DIM, intermediate=128, layers=2))
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**tiny_unet_config())
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**tiny_vae_config())
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# Condition channels as composer.adapter.condition_tensor feeds them: grayscale sketch, RGB pose.
TINY_ADAPTER_CHANNELS = {"sketch": 1, "pose": 3}
_TINY_ADAPTER_SEEDS = {"sketch": 101, "pose": 102}


def build_tiny_adapter(kind: str) -> T2IAdapter:
    """A full T2I-Adapter for the tiny UNet (one feature map per down level), deterministic per kind.

    Built under a forked RNG, so building one leaves the global torch seed state untouched.
    """
    if kind not in TINY_ADAPTER_CHANNELS:
        raise ValueError(f"tiny T2I-Adapter kind: expected one of {sorted(TINY_ADAPTER_CHANNELS)}, got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_ADAPTER_SEEDS[kind])
        adapter = T2IAdapter(
            in_channels=TINY_ADAPTER_CHANNELS[kind],
            channels=list(tiny_unet_config()["block_out_channels"]),
            num_res_blocks=2,
            downscale_factor=8,
            adapter_type="full_adapter",
        )
    return adapter.eval()


BUILTIN_ADAPTERS: dict[str, Callable[[], T2IAdapter]] = {
    f"tiny-t2i-{kind}": partial(build_tiny_adapter, kind) for kind in TINY_ADAPTER_CHANNELS
}
