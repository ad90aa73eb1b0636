"""Latent re-initialization (official ``replace_latents``, L186-229).

For each region, a box-sized window of summed concept-token attention is slid over the whole map;
the initial-noise patch under the best window is copied into the box, then the latent is
renormalized to the original global mean and standard deviation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

GridBox = tuple[int, int, int, int]


def window_scores(attention: torch.Tensor, box_h: int, box_w: int) -> torch.Tensor:
    """Sum of ``attention`` ``[h, w]`` over every ``box_h x box_w`` window: ``[h - box_h + 1, w - box_w + 1]``."""
    kernel = attention.new_ones(1, 1, box_h, box_w)
    return F.conv2d(attention[None, None], kernel)[0, 0]


def best_window(attention: torch.Tensor, box_h: int, box_w: int) -> tuple[int, int]:
    """Top-left ``(row, col)`` of the highest-scoring box-sized window (first one on ties)."""
    scores = window_scores(attention, box_h, box_w)
    flat = int(torch.argmax(scores.flatten()))
    return flat // scores.shape[1], flat % scores.shape[1]


def reinitialize_latents(
    latents: torch.Tensor,
    region_maps: torch.Tensor,
    boxes: Sequence[GridBox],
    token_positions: Sequence[Sequence[int]],
    factor: int,
) -> tuple[torch.Tensor, list[tuple[int, int] | None]]:
    """Move each region's best-scoring noise patch into its box, then renormalize.

    ``region_maps``: ``[R, h, w, T]`` (heads and layers averaged); ``factor``: latent cells per grid
    cell. Returns the new latents and, per region, the chosen window's top-left grid cell (None when
    the box is empty at this resolution).
    """
    source = latents.detach()
    result = source.clone()
    chosen: list[tuple[int, int] | None] = []
    for r, (y0, y1, x0, x1) in enumerate(boxes):
        box_h, box_w = y1 - y0, x1 - x0
        if box_h <= 0 or box_w <= 0:
            chosen.append(None)
            continue
        attention = region_maps[r][:, :, list(token_positions[r])].float().sum(dim=-1)
        row, col = best_window(attention, box_h, box_w)
        chosen.append((row, col))
        patch = source[:, :, factor * row : factor * (row + box_h), factor * col : factor * (col + box_w)]
        result[:, :, factor * y0 : factor * y1, factor * x0 : factor * x1] = patch
    mean, std = source.float().mean(), source.float().std()
    result = ((result.float() - result.float().mean()) / result.float().std() * std + mean).to(latents.dtype)
    return result, chosen
