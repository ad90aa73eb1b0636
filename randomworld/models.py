"""Tiny SD1.5-architecture components built from configs with fixed seeds (no network).

Same layer names and 16 cross-attention layers as SD1.5, tiny widths. Real weights are the
user's; the code path is the same. The tiny T2I-Adapters (``builtin:random-t2i-sketch`` /
``builtin:random-t2i-pose``) fit the tiny UNet as TencentARC's SD1.4 adapters fit SD1.5.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, T2IAdapter, UNet2DConditionModel
from transformers import CLIPTextModel

from bench.pipelines import sd_scheduler
from bench.tokenizer import build_clip_tokenizer, small_clip_text_config

RANDOM_TEXT_DIM = 32


def random_unet_config(cross_attention_dim: int = RANDOM_TEXT_DIM) -> dict:
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


def random_vae_config() -> dict:
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


def build_random_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Build the tiny SD1.5-layout pipeline with deterministic random weights."""
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(small_clip_text_config(tokenizer, RANDOM_TEXT_DIM, intermediate=128, layers=2))
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**random_unet_config())
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**random_vae_config())
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


# Condition channels as regions.adapters.condition_tensor feeds them: grayscale sketch, RGB pose.
RANDOM_ADAPTER_CHANNELS = {"sketch": 1, "pose": 3}
_RANDOM_ADAPTER_SEEDS = {"sketch": 101, "pose": 102}


def build_random_adapter(kind: str) -> T2IAdapter:
    """A full T2I-Adapter for the tiny UNet (one feature map per down level), deterministic per kind.

    Built under a forked RNG, so building one leaves the global torch seed state untouched.
    """
    if kind not in RANDOM_ADAPTER_CHANNELS:
        raise ValueError(f"tiny T2I-Adapter kind: expected one of {sorted(RANDOM_ADAPTER_CHANNELS)}, got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_ADAPTER_SEEDS[kind])
        adapter = T2IAdapter(
            in_channels=RANDOM_ADAPTER_CHANNELS[kind],
            channels=list(random_unet_config()["block_out_channels"]),
            num_res_blocks=2,
            downscale_factor=8,
            adapter_type="full_adapter",
        )
    return adapter.eval()


BUILTIN_ADAPTERS: dict[str, Callable[[], T2IAdapter]] = {
    f"random-t2i-{kind}": partial(build_random_adapter, kind) for kind in RANDOM_ADAPTER_CHANNELS
}
