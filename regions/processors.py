"""The region processors: masked self-attention and region-aware cross-attention, on every attention layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from bench.layers import attention_level, cross_attention_layers
from regions.controller import Controller, LayerCache, StopForward
from regions.geometry import AttentionGroup


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, N, C] -> [B, heads, N, d]``."""
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, N, d] -> [B, N, C]``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _check_supported(attn: Attention, name: str) -> None:
    if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_cross or attn.norm_q is not None:
        raise ValueError(f"attention layer '{name}': expected an SD1.x attention (no spatial/group/cross/qk "
                         "norms); this UNet layout is not supported by the region processors")


class _Processor:
    """Common parts of the two processors."""

    def __init__(self, controller: Controller, name: str, level: int):
        self.controller = controller
        self.name = name
        self.level = level

    @property
    def at_map_level(self) -> bool:
        return self.level == self.controller.map_level

    @staticmethod
    def _finish(attn: Attention, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class SelfAttnProcessor(_Processor):
    """Self-attention with the concept region mask; explicit probabilities only where stored maps need them.

    The mask is applied by attending each query group of :attr:`regions.geometry.Geometry.groups` to its
    allowed keys with fused attention (no dense ``[N, N]`` mask); the explicit path (stored maps at the
    map level) masks the full score matrix, as upstream does.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Masked self-attention of ``hidden_states`` ``[B, N, C]``."""
        ctl = self.controller
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        geo = ctl.geometry(self.level) if ctl.region_mask and ctl.num_regions else None
        if ctl.store_self and self.at_map_level:
            q, k, v = (_heads(x, attn.heads) for x in (query, key, value))
            scores = (q @ k.transpose(-1, -2)) * attn.scale
            allowed = geo.allowed if geo is not None else None
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            probs = scores.softmax(dim=-1)
            _accumulate_self(ctl, probs)
            out = _merge_heads(probs @ v)
        elif geo is None or geo.groups is None:
            out = _merge_heads(F.scaled_dot_product_attention(
                _heads(query, attn.heads), _heads(key, attn.heads), _heads(value, attn.heads), scale=attn.scale))
        else:
            out = _grouped_attention(query, key, value, geo.groups, geo.group_order, attn.heads, attn.scale)
        out = attn.to_out[0](out.to(query.dtype))
        return self._finish(attn, out, hidden_states)


def _grouped_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, groups: list[AttentionGroup],
                       order: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """Each group's queries attend to its allowed keys (fused SDPA); ``[B, N, C]`` in cell order."""
    parts = []
    for group in groups:
        keys = key if group.keys is None else key[:, group.keys]
        values = value if group.keys is None else value[:, group.keys]
        parts.append(_merge_heads(F.scaled_dot_product_attention(
            _heads(query[:, group.queries], heads), _heads(keys, heads), _heads(values, heads), scale=scale)))
    return torch.cat(parts, dim=1)[:, order]


class CrossAttnProcessor(_Processor):
    """Region-aware LoRA injection: global output outside the boxes, each concept's output inside its box."""

    def __init__(self, controller: Controller, name: str, level: int, index: int):
        super().__init__(controller, name, level)
        self.index = index

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Cross-attention of ``hidden_states`` ``[B, N, C]`` to the layer's own (layer-wise) text tokens."""
        ctl = self.controller
        cache = ctl.layers[self.index]
        q = _heads(attn.to_q(hidden_states), attn.heads)
        out = F.scaled_dot_product_attention(q, ctl.branch(cache.global_k), ctl.branch(cache.global_v),
                                             scale=attn.scale)
        out = attn.to_out[0](_merge_heads(out).to(q.dtype))
        if cache.region_k is not None:
            out = self._inject_regions(attn, q, out, cache)
        out = self._finish(attn, out, hidden_states)
        if ctl.stop_at == self.name:
            raise StopForward
        return out

    def _inject_regions(self, attn: Attention, q: torch.Tensor, out: torch.Tensor, cache: LayerCache
                        ) -> torch.Tensor:
        """Overwrite the in-box cells with each region's own attention output, batched across regions."""
        ctl = self.controller
        geo = ctl.geometry(self.level)
        store = ctl.store_cross and self.at_map_level
        if geo.selected.numel() == 0 and not store:
            return out
        region_k, region_v = ctl.branch(cache.region_k), ctl.branch(cache.region_v)  # [B, H, R, T, d]
        b, heads, regions, tokens, d = region_k.shape
        longest = geo.padded.shape[1]
        if store:
            scores = torch.einsum("bhnd,bhrtd->bhrnt", q, region_k) * attn.scale
            probs = scores.softmax(dim=-1)  # the full-image map of every region
            _accumulate_cross(ctl, probs)
            if geo.selected.numel() == 0:
                return out
            index = geo.padded[None, None, :, :, None].expand(b, heads, regions, longest, tokens)
            padded = torch.gather(probs, 3, index) @ region_v  # [B, H, R, M_max, d]
        else:
            queries = q[:, :, geo.padded].reshape(b, heads * regions, longest, d)
            padded = F.scaled_dot_product_attention(
                queries, region_k.reshape(b, heads * regions, tokens, d),
                region_v.reshape(b, heads * regions, tokens, d), scale=attn.scale)
        hidden = padded.reshape(b, heads, regions * longest, d)[:, :, geo.unpad]  # [B, H, M, d]
        hidden = _merge_heads(hidden).to(q.dtype)  # [B, M, C]
        weight = cache.out_weight if cache.out_weight is not None else attn.to_out[0].weight
        bias = cache.out_bias if cache.out_weight is not None else attn.to_out[0].bias
        region_out = F.linear(hidden, weight, bias)
        if cache.out_down is not None:
            low = hidden @ cache.out_down.T  # [B, M, R*rank]
            region_out = region_out + (low * geo.owner_mask(cache.rank)) @ cache.out_up
        region_out = region_out * geo.share_as(region_out.dtype)
        return out.masked_fill(geo.covered[None, :, None], 0).index_add(1, geo.selected, region_out)


def _accumulate_cross(ctl: Controller, probs: torch.Tensor) -> None:
    maps = probs[0].mean(dim=0)  # batch 1 (conditional) -> [R, N, T]
    ctl.store.cross = maps if ctl.store.cross is None else ctl.store.cross + maps
    ctl.store.cross_layers += 1


def _accumulate_self(ctl: Controller, probs: torch.Tensor) -> None:
    maps = probs[0].mean(dim=0)  # [N, N]
    ctl.store.self_map = maps if ctl.store.self_map is None else ctl.store.self_map + maps
    ctl.store.self_layers += 1


@contextmanager
def region_processors(unet: UNet2DConditionModel, controller: Controller) -> Iterator[None]:
    """Install the region processors on every attention layer; restore the originals afterwards."""
    original = unet.attn_processors
    cross = {name: i for i, name in enumerate(cross_attention_layers(unet))}
    processors: dict[str, object] = {}
    for key in original:
        name = key.removesuffix(".processor")
        _check_supported(unet.get_submodule(name), name)
        level = attention_level(unet, name)
        if name in cross:
            processors[key] = CrossAttnProcessor(controller, name, level, cross[name])
        else:
            processors[key] = SelfAttnProcessor(controller, name, level)
    unet.set_attn_processor(processors)
    try:
        yield
    finally:
        unet.set_attn_processor(original)
