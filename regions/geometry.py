"""Boxes on an attention grid: in-box cells, overlap shares and the concept region mask of self-attention.

A :class:`Geometry` is built once per image and grid and caches everything the processors index
with: the in-box cells of every region padded to one length (region attention batched across
regions), the low-rank ownership masks, and the query groups of the concept region mask.

The concept region mask (a query inside box r may not attend to keys inside any other box) depends
only on which boxes hold the query, so the queries fall into a few groups that each attend to one
key set (:class:`AttentionGroup`): the background (every key), each box's own cells (the background
and the cells of that box alone) and the cells where boxes overlap (the background only). Attending
each group to its keys with fused attention gives the masked probabilities without a dense
``[N, N]`` mask: masked keys have probability exactly 0 either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bench.boxes import Box, box_to_grid
from bench.layers import grid_at_level


@dataclass(frozen=True)
class AttentionGroup:
    """Self-attention queries that share one set of allowed keys (``keys`` None: every key)."""

    queries: torch.Tensor  # [n_q] flat cell indices
    keys: torch.Tensor | None  # [n_k] flat cell indices, or None


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
    members: torch.Tensor  # [R, N] bool, cell n inside box r
    region_mask: bool  # whether self-attention applies the concept region mask
    padded: torch.Tensor = field(init=False)  # [R, M_max] in-box cells per region, padded with cell 0
    unpad: torch.Tensor = field(init=False)  # [M] positions of the selected cells in ``padded.flatten()``
    _cache: dict[object, object] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        longest = max((len(ix) for ix in self.indices), default=0)
        padded = torch.zeros(len(self.indices), longest, dtype=torch.long, device=self.covered.device)
        unpad = []
        for r, ix in enumerate(self.indices):
            padded[r, : len(ix)] = ix
            unpad.append(torch.arange(len(ix), device=ix.device) + r * longest)
        self.padded = padded
        self.unpad = torch.cat(unpad) if unpad else torch.zeros(0, dtype=torch.long, device=self.covered.device)

    @property
    def empty(self) -> list[int]:
        """Regions whose box has no cell on this grid."""
        return [r for r, ix in enumerate(self.indices) if len(ix) == 0]

    @property
    def masked(self) -> bool:
        """Whether self-attention is masked at all here (the mask needs two boxes)."""
        return self.region_mask and len(self.indices) > 1

    @property
    def allowed(self) -> torch.Tensor | None:
        """The dense ``[N, N]`` bool mask (True = may attend), built on first use (explicit probabilities only)."""
        if not self.masked:
            return None
        if "allowed" not in self._cache:
            member = self.members.float()
            others = member.sum(0, keepdim=True) - member  # [R, N]: boxes other than r holding the key
            allowed = ~((member.T @ others) > 0)  # blocked: query in r, key in some j != r
            # A query blocked from every key (overlaps covering the image) attends everywhere: what the
            # official fp32 -1e6 bias amounts to (a constant shift), instead of fp16's NaN.
            allowed[~allowed.any(dim=1)] = True
            self._cache["allowed"] = allowed
        return self._cache["allowed"]  # type: ignore[return-value]

    def bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The mask as an additive ``0 / -inf`` bias in ``dtype`` (dense; kept for reference and tests)."""
        allowed = self.allowed
        if allowed is None:
            return None
        key = ("bias", dtype)
        if key not in self._cache:
            self._cache[key] = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
                ~allowed, float("-inf"))
        return self._cache[key]  # type: ignore[return-value]

    @property
    def groups(self) -> list[AttentionGroup] | None:
        """The query groups of the concept region mask and their allowed keys (None: no mask here).

        Background queries see every key; a query in box r alone sees the background and the cells of
        r alone; a query where boxes overlap sees the background only (every key if there is none,
        as :attr:`allowed` falls back). The groups partition the cells.
        """
        if not self.masked:
            return None
        if "groups" not in self._cache:
            count = self.members.sum(0)
            background = count == 0
            n = count.numel()
            every = torch.arange(n, device=count.device)

            def group(queries: torch.Tensor, keys: torch.Tensor) -> AttentionGroup:
                return AttentionGroup(every[queries], None if bool(keys.all()) else every[keys])

            groups = []
            if background.any():
                groups.append(AttentionGroup(every[background], None))
            for member in self.members:
                alone = member & (count == 1)
                if alone.any():
                    groups.append(group(alone, background | alone))
            overlap = count > 1
            if overlap.any():
                groups.append(group(overlap, background if background.any() else torch.ones_like(background)))
            self._cache["groups"] = groups
            self._cache["group_order"] = torch.argsort(torch.cat([g.queries for g in groups]))
        return self._cache["groups"]  # type: ignore[return-value]

    @property
    def group_order(self) -> torch.Tensor:
        """Where each cell's row is in the groups' outputs concatenated (their inverse permutation)."""
        assert self.groups is not None
        return self._cache["group_order"]  # type: ignore[return-value]

    def owner_mask(self, rank: int) -> torch.Tensor:
        """``[M, R * rank]`` bool: the low-rank columns of each selected cell's own region."""
        key = ("owner", rank)
        if key not in self._cache:
            columns = torch.arange(len(self.indices) * rank, device=self.region_of.device) // rank
            self._cache[key] = columns[None, :] == self.region_of[:, None]
        return self._cache[key]  # type: ignore[return-value]

    def share_as(self, dtype: torch.dtype) -> torch.Tensor:
        """:attr:`share` as ``[1, M, 1]`` in ``dtype``."""
        key = ("share", dtype)
        if key not in self._cache:
            self._cache[key] = self.share[None, :, None].to(dtype)
        return self._cache[key]  # type: ignore[return-value]


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
    return Geometry(h, w, grid_boxes, indices, selected, region_of, share, count > 0, flat, with_mask)


@dataclass(frozen=True)
class EmptyBox:
    """A region whose box has no cell on an attention grid (level: downsampling factor of the latent)."""

    region: int
    level: int
    grid_hw: tuple[int, int]


def empty_boxes(boxes: Sequence[Box], latent_hw: tuple[int, int], levels: Sequence[int]) -> list[EmptyBox]:
    """Every (region, level) whose box rounds to no cell on that level's grid (ceil starts, floor ends)."""
    found = []
    for level in sorted(set(levels)):
        h, w = grid_at_level(latent_hw, level)
        for r, box in enumerate(boxes):
            y0, y1, x0, x1 = box_to_grid(box, h, w)
            if y1 <= y0 or x1 <= x0:
                found.append(EmptyBox(r, level, (h, w)))
    return found
