"""Region-aware attention: the controller shared by all processors, and the self-/cross-attention processors.

One :class:`Controller` holds everything the processors need for the current UNet forward: the mode
(``"cfg"``: batch [uncond, cond]; ``"cond"``: batch 1, conditional only), the text-derived keys and
values (computed once per image), the per-resolution box geometry, the attention maps of the
loss-level layers and where to stop a truncated forward. Processors read it instead of
``cross_attention_kwargs`` (which diffusers filters).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from bench.boxes import Box, box_to_grid
from bench.layers import attention_level, cross_attention_layers


class StopForward(Exception):
    """Raised after the last loss-level layer of a truncated forward (the rest cannot change the loss)."""


@dataclass
class LayerCache:
    """Text-derived tensors of one cross-attention layer, computed once per image (no grad).

    ``global_k/v``: ``[2, heads, T, d]`` for [uncond, cond]. ``region_k/v``: ``[2, heads, R, T, d]`` from
    base weights plus each concept's low-rank delta. ``out_weight/out_bias``: the base ``to_out.0``
    (a copy only when a background LoRA is merged into the live layer). ``out_down``: ``[R*rank, C]``
    stacked ``D``; ``out_up``: ``[R*rank, C]`` stacked ``(scale * U)^T``.
    """

    global_k: torch.Tensor
    global_v: torch.Tensor
    region_k: torch.Tensor | None = None
    region_v: torch.Tensor | None = None
    out_weight: torch.Tensor | None = None
    out_bias: torch.Tensor | None = None
    out_down: torch.Tensor | None = None
    out_up: torch.Tensor | None = None
    rank: int = 0


@dataclass
class Geometry:
    """Box layout at one attention resolution ``h x w`` (built once per image and resolution)."""

    h: int
    w: int
    grid_boxes: list[tuple[int, int, int, int]]
    indices: list[torch.Tensor]  # flat in-box cell indices per region
    selected: torch.Tensor  # all region indices concatenated [M]
    region_of: torch.Tensor  # region id of each selected cell [M]
    share: torch.Tensor  # 1 / (number of boxes covering the cell) for each selected cell [M]
    covered: torch.Tensor  # [N] bool, inside any box
    allowed: torch.Tensor | None = None  # [N, N] bool self-attention mask (True = may attend)
    _bias: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The mask as an additive ``0 / -inf`` bias in ``dtype`` (SDPA would convert a bool mask every call)."""
        if self.allowed is None:
            return None
        if dtype not in self._bias:
            bias = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
            self._bias[dtype] = bias.masked_fill_(~self.allowed, float("-inf"))
        return self._bias[dtype]


@dataclass
class MapStore:
    """Sums of loss-level attention maps over layers (heads already averaged)."""

    cross: torch.Tensor | None = None  # [R, N, T]
    self_map: torch.Tensor | None = None  # [N, N]
    cross_layers: int = 0
    self_layers: int = 0

    def cross_mean(self) -> torch.Tensor | None:
        """The region maps averaged over layers, ``[R, N, T]``."""
        return None if self.cross is None else self.cross / self.cross_layers

    def self_mean(self) -> torch.Tensor | None:
        """The self-attention map averaged over layers, ``[N, N]``."""
        return None if self.self_map is None else self.self_map / self.self_layers


@dataclass
class Controller:
    """State shared by the processors of one UNet (see the module docstring)."""

    boxes: Sequence[Box]
    latent_hw: tuple[int, int]
    layers: list[LayerCache] = field(default_factory=list)
    region_mask: bool = True
    loss_level: int = 4
    mode: str = "cfg"
    store_cross: bool = False
    store_self: bool = False
    stop_at: str | None = None
    store: MapStore = field(default_factory=MapStore)
    _geometry: dict[tuple[int, int], Geometry] = field(default_factory=dict)

    @property
    def num_regions(self) -> int:
        """Number of regions."""
        return len(self.boxes)

    def branch(self, tensor: torch.Tensor) -> torch.Tensor:
        """Select the CFG rows of a ``[2, ...]`` cache for the current mode."""
        return tensor if self.mode == "cfg" else tensor[1:]

    def grid(self, level: int) -> tuple[int, int]:
        """Attention grid at a downsampling level (stride-2 convs with padding 1 round up)."""
        h, w = self.latent_hw
        while level > 1:
            h, w, level = math.ceil(h / 2), math.ceil(w / 2), level // 2
        return h, w

    def geometry(self, level: int) -> Geometry:
        """The box layout at a level, built on first use."""
        h, w = self.grid(level)
        if (h, w) not in self._geometry:
            self._geometry[(h, w)] = build_geometry(self.boxes, h, w, self.region_mask, self.device)
        return self._geometry[(h, w)]

    @property
    def device(self) -> torch.device:
        """Device of the caches."""
        return self.layers[0].global_k.device if self.layers else torch.device("cpu")

    def reset_store(self) -> None:
        """Forget the maps of the previous forward."""
        self.store = MapStore()


def build_geometry(boxes: Sequence[Box], h: int, w: int, with_mask: bool, device: torch.device) -> Geometry:
    """Grid boxes, in-box indices, overlap shares and the concept region mask at resolution ``h x w``."""
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
        others = member.sum(0, keepdim=True) - member  # [R, N]: boxes other than r holding the key
        blocked = (member.T @ others) > 0  # query in r, key in some j != r
        allowed = ~blocked
        # A query blocked from every key (overlaps covering the image) attends everywhere: what the
        # official fp32 -1e6 bias amounts to (a constant shift), instead of fp16's NaN.
        allowed[~allowed.any(dim=1)] = True
    return Geometry(h, w, grid_boxes, indices, selected, region_of, share, count > 0, allowed)


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
                         "norms); this UNet layout is not supported by LoRA-Composer's processors")


class _Processor:
    """Common parts of the two processors."""

    def __init__(self, controller: Controller, name: str, level: int):
        self.controller = controller
        self.name = name
        self.level = level

    @property
    def at_loss_level(self) -> bool:
        return self.level == self.controller.loss_level

    @staticmethod
    def _finish(attn: Attention, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class SelfAttnProcessor(_Processor):
    """Self-attention with the concept region mask; explicit probabilities only where the region loss needs them."""

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
        q = _heads(attn.to_q(hidden_states), attn.heads)
        k = _heads(attn.to_k(hidden_states), attn.heads)
        v = _heads(attn.to_v(hidden_states), attn.heads)
        geo = ctl.geometry(self.level) if ctl.region_mask and ctl.num_regions else None
        allowed = geo.allowed if geo is not None else None
        if ctl.store_self and self.at_loss_level:
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
        ctl = self.controller
        geo = ctl.geometry(self.level)
        if geo.selected.numel() == 0 and not (ctl.store_cross and self.at_loss_level):
            return out
        region_k, region_v = ctl.branch(cache.region_k), ctl.branch(cache.region_v)  # [B, H, R, T, d]
        if ctl.store_cross and self.at_loss_level:
            scores = torch.einsum("bhnd,bhrtd->bhrnt", q, region_k) * attn.scale
            probs = scores.softmax(dim=-1)  # the full-image map of every region
            _accumulate_cross(ctl, probs)
            parts = [probs[:, :, r, ix] @ region_v[:, :, r] for r, ix in enumerate(geo.indices)]
        else:
            parts = [
                F.scaled_dot_product_attention(q[:, :, ix], region_k[:, :, r], region_v[:, :, r], scale=attn.scale)
                for r, ix in enumerate(geo.indices)
            ]
        if geo.selected.numel() == 0:
            return out
        hidden = _merge_heads(torch.cat(parts, dim=2)).to(q.dtype)  # [B, M, C]
        weight = cache.out_weight if cache.out_weight is not None else attn.to_out[0].weight
        bias = cache.out_bias if cache.out_weight is not None else attn.to_out[0].bias
        region_out = F.linear(hidden, weight, bias)
        if cache.out_down is not None:
            low = hidden @ cache.out_down.T  # [B, M, R*rank]
            own = (torch.arange(low.shape[-1], device=low.device) // cache.rank)[None, :] == geo.region_of[:, None]
            region_out = region_out + (low * own) @ cache.out_up
        region_out = region_out * geo.share[None, :, None].to(region_out.dtype)
        return out.masked_fill(geo.covered[None, :, None], 0).index_add(1, geo.selected, region_out)


def _accumulate_cross(ctl: Controller, probs: torch.Tensor) -> None:
    maps = probs[0].mean(dim=0)  # batch 1 (conditional) -> [R, N, T]
    ctl.store.cross = maps if ctl.store.cross is None else ctl.store.cross + maps
    ctl.store.cross_layers += 1


def _accumulate_self(ctl: Controller, probs: torch.Tensor) -> None:
    maps = probs[0].mean(dim=0)  # [N, N]
    ctl.store.self_map = maps if ctl.store.self_map is None else ctl.store.self_map + maps
    ctl.store.self_layers += 1


def loss_layers(unet: UNet2DConditionModel, level: int) -> list[str]:
    """Cross-attention module names at a downsampling level (block traversal order)."""
    return [name for name in cross_attention_layers(unet) if attention_level(unet, name) == level]


@contextmanager
def composer_processors(unet: UNet2DConditionModel, controller: Controller) -> Iterator[None]:
    """Install the composer processors on every attention layer; restore the originals afterwards."""
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
