"""A frozen copy of the region processors as they were before batched injection and grouped isolation.

Test-only reference (``regions/processors.py`` and ``regions/geometry.py`` at f49bb80): a per-region
loop of fused attention inside the boxes and a dense ``0 / -inf`` self-attention bias. The tests
compare the current processors with it, layer by layer and end to end. Do not "improve" it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from bench.boxes import Box, box_to_grid
from bench.layers import attention_level, cross_attention_layers
from regions.controller import Controller, LayerCache, StopForward


@dataclass
class OldGeometry:
    h: int
    w: int
    grid_boxes: list[tuple[int, int, int, int]]
    indices: list[torch.Tensor]
    selected: torch.Tensor
    region_of: torch.Tensor
    share: torch.Tensor
    covered: torch.Tensor
    allowed: torch.Tensor | None = None
    _bias: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        if self.allowed is None:
            return None
        if dtype not in self._bias:
            bias = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
            self._bias[dtype] = bias.masked_fill_(~self.allowed, float("-inf"))
        return self._bias[dtype]


def old_build_geometry(boxes: Sequence[Box], h: int, w: int, with_mask: bool, device: torch.device) -> OldGeometry:
    n = h * w
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool, device=device)
    grid_boxes = []
    for r, box in enumerate(boxes):
        y0, y1, x0, x1 = box_to_grid(box, h, w)
        grid_boxes.append((y0, y1, x0, x1))
        if y1 > y0 and x1 > x0:
            masks[r, y0:y1, x0:x1] = True
    flat = masks.view(len(boxes), n)
    count = flat.sum(0)
    indices = [torch.nonzero(m).flatten() for m in flat]
    empty = torch.zeros(0, dtype=torch.long, device=device)
    selected = torch.cat(indices) if indices else empty
    region_of = torch.cat([torch.full_like(ix, r) for r, ix in enumerate(indices)]) if indices else empty
    share = 1.0 / count[selected].float() if selected.numel() else torch.zeros(0, device=device)
    allowed = None
    if with_mask and len(boxes) > 1:
        member = flat.float()
        others = member.sum(0, keepdim=True) - member
        blocked = (member.T @ others) > 0
        allowed = ~blocked
        allowed[~allowed.any(dim=1)] = True
    return OldGeometry(h, w, grid_boxes, indices, selected, region_of, share, count > 0, allowed)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class _Old:
    def __init__(self, controller: Controller, name: str, level: int):
        self.controller = controller
        self.name = name
        self.level = level
        self._geometry: dict[tuple, OldGeometry] = {}

    def geometry(self) -> OldGeometry:
        ctl = self.controller
        h, w = ctl.grid(self.level)
        key = (tuple(ctl.boxes), h, w, ctl.region_mask)
        if key not in self._geometry:
            self._geometry[key] = old_build_geometry(ctl.boxes, h, w, ctl.region_mask, ctl.device)
        return self._geometry[key]

    @property
    def at_map_level(self) -> bool:
        return self.level == self.controller.map_level

    @staticmethod
    def _finish(attn: Attention, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class OldSelfAttnProcessor(_Old):
    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None) -> torch.Tensor:
        ctl = self.controller
        q = _heads(attn.to_q(hidden_states), attn.heads)
        k = _heads(attn.to_k(hidden_states), attn.heads)
        v = _heads(attn.to_v(hidden_states), attn.heads)
        geo = self.geometry() if ctl.region_mask and ctl.num_regions else None
        allowed = geo.allowed if geo is not None else None
        if ctl.store_self and self.at_map_level:
            scores = (q @ k.transpose(-1, -2)) * attn.scale
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            probs = scores.softmax(dim=-1)
            _accumulate_self(ctl, probs)
            out = probs @ v
        else:
            bias = geo.bias(q.dtype) if geo is not None else None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
        out = attn.to_out[0](_merge_heads(out).to(q.dtype))
        return self._finish(attn, out, hidden_states)


class OldCrossAttnProcessor(_Old):
    def __init__(self, controller: Controller, name: str, level: int, index: int):
        super().__init__(controller, name, level)
        self.index = index

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None) -> torch.Tensor:
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
        ctl = self.controller
        geo = self.geometry()
        if geo.selected.numel() == 0 and not (ctl.store_cross and self.at_map_level):
            return out
        region_k, region_v = ctl.branch(cache.region_k), ctl.branch(cache.region_v)
        if ctl.store_cross and self.at_map_level:
            scores = torch.einsum("bhnd,bhrtd->bhrnt", q, region_k) * attn.scale
            probs = scores.softmax(dim=-1)
            _accumulate_cross(ctl, probs)
            parts = [probs[:, :, r, ix] @ region_v[:, :, r] for r, ix in enumerate(geo.indices)]
        else:
            parts = [
                F.scaled_dot_product_attention(q[:, :, ix], region_k[:, :, r], region_v[:, :, r], scale=attn.scale)
                for r, ix in enumerate(geo.indices)
            ]
        if geo.selected.numel() == 0:
            return out
        hidden = _merge_heads(torch.cat(parts, dim=2)).to(q.dtype)
        weight = cache.out_weight if cache.out_weight is not None else attn.to_out[0].weight
        bias = cache.out_bias if cache.out_weight is not None else attn.to_out[0].bias
        region_out = F.linear(hidden, weight, bias)
        if cache.out_down is not None:
            low = hidden @ cache.out_down.T
            own = (torch.arange(low.shape[-1], device=low.device) // cache.rank)[None, :] == geo.region_of[:, None]
            region_out = region_out + (low * own) @ cache.out_up
        region_out = region_out * geo.share[None, :, None].to(region_out.dtype)
        return out.masked_fill(geo.covered[None, :, None], 0).index_add(1, geo.selected, region_out)


def _accumulate_cross(ctl: Controller, probs: torch.Tensor) -> None:
    maps = probs[0].mean(dim=0)
    ctl.store.cross = maps if ctl.store.cross is None else ctl.store.cross + maps
    ctl.store.cross_layers += 1


def _accumulate_self(ctl: Controller, probs: torch.Tensor) -> None:
    maps = probs[0].mean(dim=0)
    ctl.store.self_map = maps if ctl.store.self_map is None else ctl.store.self_map + maps
    ctl.store.self_layers += 1


@contextmanager
def old_region_processors(unet: UNet2DConditionModel, controller: Controller) -> Iterator[None]:
    """Install the reference processors (same contract as ``regions.processors.region_processors``)."""
    original = unet.attn_processors
    cross = {name: i for i, name in enumerate(cross_attention_layers(unet))}
    processors: dict[str, object] = {}
    for key in original:
        name = key.removesuffix(".processor")
        level = attention_level(unet, name)
        if name in cross:
            processors[key] = OldCrossAttnProcessor(controller, name, level, cross[name])
        else:
            processors[key] = OldSelfAttnProcessor(controller, name, level)
    unet.set_attn_processor(processors)
    try:
        yield
    finally:
        unet.set_attn_processor(original)
