"""Random ED-LoRA-shaped concepts for tests and timing (no files, no network)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bench.layers import cross_attention_layers
from bench.lora.canonical import ConceptLora, LoraDelta

_TEXT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
_UNET_PROJECTIONS = ("to_k", "to_v", "to_out.0")


def _delta(layer: nn.Linear, rank: int, std: float, generator: torch.Generator) -> LoraDelta:
    down = torch.randn(rank, layer.in_features, generator=generator) * std
    up = torch.randn(layer.out_features, rank, generator=generator) * std
    return LoraDelta(down=down, up=up)


def random_concept_lora(
    unet: nn.Module,
    text_encoder: nn.Module,
    tokens: Sequence[str],
    seed: int = 0,
    rank: int = 4,
    std: float = 0.16,
    embedding_std: float = 0.05,
) -> ConceptLora:
    """An ED-LoRA-like concept: attn2 to_k/to_v/to_out.0 and text-encoder attention deltas, and
    distinct layer-wise embeddings (one row per cross-attention layer) for every token."""
    generator = torch.Generator().manual_seed(seed)
    layers = cross_attention_layers(unet)
    unet_deltas = {
        f"{name}.{proj}": _delta(unet.get_submodule(f"{name}.{proj}"), rank, std, generator)
        for name in layers
        for proj in _UNET_PROJECTIONS
    }
    text_deltas = {}
    for name, module in text_encoder.named_modules():
        if name.endswith("self_attn"):
            for proj in _TEXT_PROJECTIONS:
                text_deltas[f"{name}.{proj}"] = _delta(getattr(module, proj), rank, std, generator)
    dim = text_encoder.get_input_embeddings().embedding_dim
    embeddings = {t: torch.randn(len(layers), dim, generator=generator) * embedding_std for t in tokens}
    return ConceptLora(unet=unet_deltas, text_encoder=text_deltas, token_embeddings=embeddings,
                       source=f"synthetic:{seed}", format="synthetic")
