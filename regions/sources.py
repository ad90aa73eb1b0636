"""Where region keys/values come from, and the per-layer caches built from them once per image.

Two sources:

- :class:`ConceptDeltas` (LoRA-Composer): the *base* projections plus each region concept's
  low-rank delta, batched across concepts: ``K_r = to_k(E_r) + scale * (E_r D_k^T) U_k^T`` (the
  official [opt] branch's form);
- :class:`LiveWeights` (Mix-of-Show): the UNet's own projections as they are (a fused model's
  weights written into it), with no per-region delta.

The global path may carry a background concept's delta; the region path never does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel

from bench.layers import cross_attention_layers
from bench.lora.apply import low_rank_delta
from bench.lora.canonical import ConceptLora, LoraDelta
from regions.controller import LayerCache


@dataclass(frozen=True)
class ConceptDeltas:
    """Region ``r`` reads base projections plus ``loras[r]``'s low-rank deltas (``to_k``, ``to_v``, ``to_out.0``)."""

    loras: Sequence[ConceptLora]

    def deltas(self, layer: str, projection: str) -> list[LoraDelta | None]:
        """Each region's delta of ``<layer>.<projection>`` (None where its LoRA has none)."""
        return [lora.unet.get(f"{layer}.{projection}") for lora in self.loras]


@dataclass(frozen=True)
class LiveWeights:
    """``regions`` regions that read the UNet's own projections (e.g. a fused model's), without deltas."""

    regions: int

    def deltas(self, layer: str, projection: str) -> list[LoraDelta | None]:
        """No region has a delta."""
        return [None] * self.regions


RegionSource = ConceptDeltas | LiveWeights


def _stack_deltas(deltas: Sequence[LoraDelta | None], in_dim: int, out_dim: int, like: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``down [R, rank, in]`` and ``up [R, out, rank]`` (scale folded in, zero-padded to the largest rank)."""
    rank = max([d.rank for d in deltas if d is not None], default=0)
    down = like.new_zeros(len(deltas), rank, in_dim)
    up = like.new_zeros(len(deltas), out_dim, rank)
    for r, delta in enumerate(deltas):
        if delta is not None:
            down[r, : delta.rank] = delta.down.reshape(delta.rank, -1).to(like)
            up[r, :, : delta.rank] = delta.up.reshape(out_dim, delta.rank).to(like) * delta.scale
    return down, up, rank


def _project(linear: torch.nn.Module, embeds: torch.Tensor, deltas: Sequence[LoraDelta | None]) -> torch.Tensor:
    """``linear(E_r) + delta_r(E_r)`` for ``embeds`` ``[R, B, T, D]``, batched over regions."""
    out = linear(embeds)
    down, up, rank = _stack_deltas(deltas, embeds.shape[-1], out.shape[-1], embeds)
    if rank:
        out = out + torch.einsum("rbtk,rok->rbto", torch.einsum("rbti,rki->rbtk", embeds, down), up)
    return out


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, T, C] -> [B, heads, T, d]``."""
    b, t, c = x.shape
    return x.view(b, t, heads, c // heads).transpose(1, 2)


@torch.no_grad()
def build_layer_caches(
    unet: UNet2DConditionModel,
    global_embeds: torch.Tensor,
    region_embeds: torch.Tensor | None = None,
    source: RegionSource | None = None,
    background: ConceptLora | None = None,
) -> list[LayerCache]:
    """One :class:`LayerCache` per cross-attention layer (block traversal order).

    ``global_embeds``: ``[2, L, T, D]`` (uncond, cond) layer-wise global prompt encodings.
    ``region_embeds``: ``[R, 2, L, T, D]`` per region (region negative prompt, region prompt), each
    encoded with its concept's text encoder; ``source`` says where region keys/values come from.
    With :class:`ConceptDeltas`, call it while the UNet holds *base* weights: the background's deltas
    are applied here in low-rank form for the global keys/values, and its copy of the base
    ``to_out.0`` is kept so the region path stays background-free once it is merged.
    """
    caches = []
    dtype = unet.dtype
    for index, name in enumerate(cross_attention_layers(unet)):
        attn = unet.get_submodule(name)
        embeds = global_embeds[:, index].to(dtype)
        keys, values = attn.to_k(embeds), attn.to_v(embeds)
        if background is not None:
            for proj, key in ((keys, "to_k"), (values, "to_v")):
                delta = background.unet.get(f"{name}.{key}")
                if delta is not None:
                    proj += low_rank_delta(embeds, delta)
        cache = LayerCache(_split_heads(keys, attn.heads), _split_heads(values, attn.heads))
        if region_embeds is not None and source is not None and len(region_embeds):
            e = region_embeds[:, :, index].to(dtype)  # [R, 2, T, D]
            rk = _project(attn.to_k, e, source.deltas(name, "to_k"))
            rv = _project(attn.to_v, e, source.deltas(name, "to_v"))
            r, b, t, c = rk.shape
            d = c // attn.heads
            cache.region_k = rk.view(r, b, t, attn.heads, d).permute(1, 3, 0, 2, 4).contiguous()
            cache.region_v = rv.view(r, b, t, attn.heads, d).permute(1, 3, 0, 2, 4).contiguous()
            out = attn.to_out[0]
            down, up, rank = _stack_deltas(source.deltas(name, "to_out.0"), c, out.out_features, out.weight)
            if rank:
                cache.out_down = down.reshape(r * rank, c)
                cache.out_up = up.permute(0, 2, 1).reshape(r * rank, out.out_features)
                cache.rank = rank
            if background is not None:
                cache.out_weight = out.weight.detach().clone()
                cache.out_bias = None if out.bias is None else out.bias.detach().clone()
        caches.append(cache)
    return caches
