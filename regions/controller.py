"""What the region processors of one UNet share during a forward: the controller.

One :class:`Controller` holds everything the processors need for the current UNet forward: the mode
(``"cfg"``: batch [uncond, cond]; ``"cond"``: batch 1, conditional only), the text-derived keys and
values (computed once per image), the per-resolution box geometry, the attention maps of the
layers at the map level and where to stop a truncated forward. Processors read it instead of
``cross_attention_kwargs`` (which diffusers filters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bench.boxes import Box
from bench.layers import grid_at_level
from regions.geometry import Geometry, build_geometry


class StopForward(Exception):
    """Raised after the last map-level layer of a truncated forward (the rest cannot change the stored maps)."""


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
class MapStore:
    """Sums of map-level attention maps over layers (heads already averaged)."""

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
    map_level: int = 4  # maps are stored from the layers at this downsampling level
    mode: str = "cfg"
    store_cross: bool = False
    store_self: bool = False
    stop_at: str | None = None
    store: MapStore = field(default_factory=MapStore)
    _geometry: dict[tuple[int, int], Geometry] = field(default_factory=dict)
    _by_level: dict[int, Geometry] = field(default_factory=dict)

    @property
    def num_regions(self) -> int:
        """Number of regions."""
        return len(self.boxes)

    def branch(self, tensor: torch.Tensor) -> torch.Tensor:
        """Select the CFG rows of a ``[2, ...]`` cache for the current mode."""
        return tensor if self.mode == "cfg" else tensor[1:]

    def grid(self, level: int) -> tuple[int, int]:
        """Attention grid at a downsampling level."""
        return grid_at_level(self.latent_hw, level)

    def geometry(self, level: int) -> Geometry:
        """The box layout at a level, built on first use."""
        geometry = self._by_level.get(level)
        if geometry is None:
            h, w = self.grid(level)
            if (h, w) not in self._geometry:
                self._geometry[(h, w)] = build_geometry(self.boxes, h, w, self.region_mask, self.device)
            geometry = self._by_level[level] = self._geometry[(h, w)]
        return geometry

    @property
    def device(self) -> torch.device:
        """Device of the caches."""
        return self.layers[0].global_k.device if self.layers else torch.device("cpu")

    def reset_store(self) -> None:
        """Forget the maps of the previous forward."""
        self.store = MapStore()
