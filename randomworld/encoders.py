"""The random-weight world's image encoders: an open_clip CLIP and a DINOv2, tiny and seeded."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.models import ImageModel, ImageTextModel

CLIP_CONFIG = Path(__file__).with_name("lcbench_random_clip.json")


def build_random_clip(seed: int = 0, ref: str = "builtin:random-clip") -> ImageTextModel:
    """A tiny open_clip CLIP (config ``lcbench_random_clip.json``) with fixed random weights."""
    import open_clip

    open_clip.add_model_config(CLIP_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net, _, preprocess = open_clip.create_model_and_transforms(CLIP_CONFIG.stem, pretrained=None)
    return ImageTextModel(net, preprocess, open_clip.get_tokenizer(CLIP_CONFIG.stem), ref, f"random-init seed {seed}")


def build_random_dino(seed: int = 0, ref: str = "builtin:random-dino") -> ImageModel:
    """A tiny transformers DINOv2 (64 px, patch 16) with fixed random weights."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=16
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Dinov2Model(config)
    return ImageModel(net, f"dinov2:{ref}", f"random-init seed {seed}")
