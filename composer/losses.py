"""LoRA-Composer's guidance losses on aggregated attention maps (official ``multi_lora_sample.py`` L21-160).

All functions take maps already averaged over heads and loss-level layers:

- ``cross``: one region's cross-attention map ``[h, w, 77]`` (queries of the whole image against that
  region's prompt, see :mod:`regions.processors`);
- ``self_map``: the self-attention map ``[h*w, h*w]``.

Boxes are grid boxes ``(y0, y1, x0, x1)`` from :func:`bench.boxes.box_to_grid`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from composer.config import LossWeights

GridBox = tuple[int, int, int, int]


def smoothing_kernel(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Attend-and-Excite's 3x3 kernel (sigma 0.5, its ``exp(-((u-1)/(2 sigma))^2)`` quirk), normalized."""
    u = torch.arange(3, dtype=torch.float64)
    g = torch.exp(-(((u - 1) / (2 * 0.5)) ** 2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).to(device=device, dtype=dtype)


def smooth(attention: torch.Tensor) -> torch.Tensor:
    """Smooth a ``[h, w]`` map with :func:`smoothing_kernel`, reflect padding 1 (replicate if a side is 1)."""
    x = attention[None, None]
    mode = "reflect" if min(attention.shape) > 1 else "replicate"
    x = F.pad(x, (1, 1, 1, 1), mode=mode)
    return F.conv2d(x, smoothing_kernel(attention.device, attention.dtype)[None, None])[0, 0]


def gaussian_box_weight(box: GridBox, grid_h: int, grid_w: int, device: torch.device | str | None = None
                        ) -> torch.Tensor:
    """``exp(-(u_y^2 + u_x^2) / 2)`` on a ``[-1, 1]^2`` grid over the box, max-normalized, zero outside."""
    y0, y1, x0, x1 = box
    weight = torch.zeros(grid_h, grid_w, device=device)
    if y1 <= y0 or x1 <= x0:
        return weight
    uy = torch.linspace(-1, 1, y1 - y0, device=device)
    ux = torch.linspace(-1, 1, x1 - x0, device=device)
    g = torch.exp(-(uy[:, None] ** 2 + ux[None, :] ** 2) / 2)
    weight[y0:y1, x0:x1] = g / g.max()
    return weight


def grid_mask(box: GridBox, grid_h: int, grid_w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A float ``[h, w]`` mask of a grid box."""
    y0, y1, x0, x1 = box
    mask = torch.zeros(grid_h, grid_w, device=device)
    if y1 > y0 and x1 > x0:
        mask[y0:y1, x0:x1] = 1.0
    return mask


def top_k_size(box: GridBox, ratio: float) -> int:
    """``floor(ratio * |box|)``, at least 1 for a non-empty box (upstream's k=0 gives NaN); 0 for an empty box."""
    y0, y1, x0, x1 = box
    cells = max(y1 - y0, 0) * max(x1 - x0, 0)
    return 0 if cells == 0 else max(1, math.floor(ratio * cells))


def enhancement_loss(smoothed: torch.Tensor, weight: torch.Tensor, k: int) -> torch.Tensor:
    """``max(0, 1 - mean(top-k(smoothed * weight)))`` (unscaled)."""
    top = torch.topk((smoothed * weight).flatten(), k).values
    return torch.clamp(1.0 - top.mean(), min=0.0)


def fill_loss(smoothed: torch.Tensor, box: GridBox) -> torch.Tensor:
    """Axis-wise L1 between the max-projections of the in-box map and the box's indicator (unscaled, both axes).

    Each mean runs over the full grid axis, so cells outside the box dilute it, as upstream.
    """
    grid_h, grid_w = smoothed.shape
    mask = grid_mask(box, grid_h, grid_w, smoothed.device).to(smoothed.dtype)
    masked = smoothed * mask
    cols = mask.amax(dim=0)
    rows = mask.amax(dim=1)
    return (masked.amax(dim=0) - cols).abs().mean() + (masked.amax(dim=1) - rows).abs().mean()


def region_loss(self_map: torch.Tensor, box: GridBox, grid_h: int, grid_w: int, k: int) -> torch.Tensor:
    """``max(0, mean(top-k(S[in-box queries, out-of-box keys])))`` (unscaled)."""
    inside = grid_mask(box, grid_h, grid_w, self_map.device).flatten().bool()
    leak = self_map[inside][:, ~inside].flatten()
    if leak.numel() == 0:
        return self_map.new_zeros(())
    top = torch.topk(leak, min(k, leak.numel())).values
    return torch.clamp(top.mean(), min=0.0)


def composer_loss(
    cross_maps: Sequence[torch.Tensor] | None,
    self_map: torch.Tensor | None,
    boxes: Sequence[GridBox],
    token_positions: Sequence[Sequence[int]],
    weights: LossWeights,
    grid_h: int,
    grid_w: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss ``sum_r sum_i (L_CE + L_fill) + sum_r L_reg`` and its parts (as floats).

    ``cross_maps[r]`` is region r's ``[h, w, 77]`` map, ``token_positions[r]`` the positions of its
    concept tokens in the 77-token sequence (SOT at 0). Regions with an empty grid box are skipped.
    """
    device = self_map.device if self_map is not None else cross_maps[0].device  # type: ignore[index]
    zero = torch.zeros((), device=device)
    parts = {"enhancement": zero, "fill": zero, "region": zero}  # tensors: one host sync at the end
    for r, box in enumerate(boxes):
        k = top_k_size(box, weights.top_k_ratio)
        if k == 0:
            continue
        if cross_maps is not None and (weights.use_enhancement or weights.use_fill):
            weight = (gaussian_box_weight(box, grid_h, grid_w, device) if weights.gaussian_weight
                      else grid_mask(box, grid_h, grid_w, device))
            for position in token_positions[r]:
                smoothed = smooth(cross_maps[r][:, :, position].float())
                if weights.use_enhancement:
                    parts["enhancement"] = parts["enhancement"] + weights.enhancement * enhancement_loss(
                        smoothed, weight, k)
                if weights.use_fill:
                    parts["fill"] = parts["fill"] + weights.fill * fill_loss(smoothed, box)
        if self_map is not None and weights.use_region:
            parts["region"] = parts["region"] + weights.region * region_loss(self_map.float(), box, grid_h, grid_w, k)
    total = parts["enhancement"] + parts["fill"] + parts["region"]
    values = torch.stack([p.detach() for p in parts.values()]).tolist()
    return total, dict(zip(parts, values, strict=True))
