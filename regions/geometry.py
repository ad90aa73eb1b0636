"""Boxes on an attention grid: in-box cells, overlap shares and the concept region mask of self-attention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from bench.boxes import Box, box_to_grid


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
