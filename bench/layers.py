"""Where the cross-attention layers of an SD1.x-layout UNet are, in the order ED-LoRA / P+ number them.

ED-LoRA and P+ give cross-attention layer ``l`` its own text embedding. Layers are numbered by
traversing ``down_blocks``, then ``mid_block``, then ``up_blocks`` (16 layers in SD1.5). That is
*not* the order of ``unet.attn_processors``, which registers the up blocks before the mid block.
"""

from __future__ import annotations

from collections.abc import Iterator

from diffusers.models.attention_processor import Attention
from torch import nn

CROSS_ATTENTION_NAME = "attn2"


def _blocks(unet: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The UNet's blocks as (name, module) in down -> mid -> up order."""
    for i, block in enumerate(unet.down_blocks):
        yield f"down_blocks.{i}", block
    if getattr(unet, "mid_block", None) is not None:
        yield "mid_block", unet.mid_block
    for i, block in enumerate(unet.up_blocks):
        yield f"up_blocks.{i}", block


def cross_attention_layers(unet: nn.Module) -> list[str]:
    """Module names of every cross-attention (``attn2``) layer, in down -> mid -> up block order."""
    names: list[str] = []
    for prefix, block in _blocks(unet):
        for name, module in block.named_modules():
            if name.rsplit(".", 1)[-1] == CROSS_ATTENTION_NAME and isinstance(module, Attention):
                names.append(f"{prefix}.{name}")
    return names


def layer_indices(unet: nn.Module) -> dict[str, int]:
    """Map each cross-attention module name to its ED-LoRA / P+ layer index."""
    return {name: i for i, name in enumerate(cross_attention_layers(unet))}


def layer_index_of(unet: nn.Module, name: str) -> int:
    """The ED-LoRA / P+ layer index of cross-attention module ``name`` (``.processor`` suffix ok)."""
    indices = layer_indices(unet)
    key = name.removesuffix(".processor")
    if key not in indices:
        raise KeyError(f"'{name}' is not a cross-attention layer; expected one of {list(indices)}")
    return indices[key]


def attention_level(unet: nn.Module, name: str) -> int:
    """Downsampling factor (1, 2, 4, 8, ...) of the feature grid at module ``name`` relative to the latent.

    Counted by traversal: each down block's downsampler halves the grid after that block's own
    layers, each up block's upsampler doubles it after that block's layers.
    """
    factor = 1
    for prefix, block in _blocks(unet):
        if name == prefix or name.startswith(prefix + "."):
            return factor
        if getattr(block, "downsamplers", None) is not None:
            factor *= 2
        if getattr(block, "upsamplers", None) is not None:
            factor //= 2
    raise KeyError(f"'{name}' is not inside down_blocks, mid_block or up_blocks of this UNet")


def grid_at_level(latent_hw: tuple[int, int], level: int) -> tuple[int, int]:
    """The attention grid ``(h, w)`` at a downsampling level of a latent ``(h, w)``.

    Each level halves the grid, rounding up (stride-2 convolutions with padding 1 do).
    """
    h, w = latent_hw
    while level > 1:
        h, w, level = -(-h // 2), -(-w // 2), level // 2
    return h, w


def layers_at_level(unet: nn.Module, level: int) -> list[str]:
    """Cross-attention module names at a downsampling level (block traversal order)."""
    return [name for name in cross_attention_layers(unet) if attention_level(unet, name) == level]
