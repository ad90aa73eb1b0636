"""The random-weight world's Paint-by-Example model: SD1.5 UNet layout with 9 input channels, tiny widths."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, PaintByExamplePipeline, PNDMScheduler, UNet2DConditionModel
from diffusers.pipelines.deprecated.paint_by_example import PaintByExampleImageEncoder
from transformers import CLIPImageProcessor, CLIPVisionConfig

from randomworld.models import RANDOM_TEXT_DIM, random_unet_config, random_vae_config


def build_random_pbe(seed: int = 0) -> PaintByExamplePipeline:
    """A tiny Paint-by-Example pipeline (SD1.5 UNet layout, 9 input channels) with fixed random weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(random_unet_config(), in_channels=9))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**random_vae_config())
    torch.manual_seed(seed + 2)
    vision = CLIPVisionConfig(
        hidden_size=32,
        projection_dim=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        image_size=32,
        patch_size=4,
        layer_norm_eps=1e-5,
    )
    encoder = PaintByExampleImageEncoder(vision, proj_size=RANDOM_TEXT_DIM)
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1
    )
    pipe = PaintByExamplePipeline(
        vae=vae.eval(),
        image_encoder=encoder.eval(),
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(size=32, crop_size=32),
        requires_safety_checker=False,
    )
    return pipe
