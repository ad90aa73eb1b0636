"""Boxes: one canonical form (normalized ``(x0, y0, x1, y1)`` in [0, 1], origin top-left).

Every method converts at its edge with the functions here; converting a box to an attention or
latent grid is :func:`box_to_grid`, used everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Box = tuple[float, float, float, float]


def validate_box(value: object) -> Box:
    """Check a canonical box; raise ValueError saying what was expected."""
    expected = "a box [x0, y0, x1, y1] of 4 numbers in [0, 1] with x0 < x1 and y0 < y1"
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 4:
        raise ValueError(expected)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ValueError(expected)
    x0, y0, x1, y1 = (float(v) for v in value)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise ValueError(expected + " (a coordinate lies outside [0, 1])")
    if x0 >= x1 or y0 >= y1:
        raise ValueError(expected + " (the box has zero area or x0 >= x1 / y0 >= y1)")
    return (x0, y0, x1, y1)


def from_tlbr_pixels(tlbr: Sequence[float], width: int, height: int) -> Box:
    """Convert upstream's pixel ``[top, left, bottom, right]`` into the canonical form."""
    top, left, bottom, right = (float(v) for v in tlbr)
    return validate_box((left / width, top / height, right / width, bottom / height))


def to_tlbr_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Convert a canonical box into pixel ``(top, left, bottom, right)`` (rounded)."""
    x0, y0, x1, y1 = box
    return (round(y0 * height), round(x0 * width), round(y1 * height), round(x1 * width))


def to_xyxy_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Convert a canonical box into pixel ``(x0, y0, x1, y1)`` (rounded), as PIL crops take it."""
    top, left, bottom, right = to_tlbr_pixels(box, width, height)
    return (left, top, right, bottom)


def box_to_grid(box: Box, grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of a grid covered by a box: ceil starts, floor ends.

    This is LoRA-Composer's quantisation, recomputed at each resolution, with its exact float
    arithmetic: upstream normalises the integer pixel box ``[top, left, bottom, right]`` by the image
    size (``inference/region_lora_sample.py`` ``prepare_text``: ``top / height``) and takes
    ``math.ceil(y0 * feat_height)`` / ``math.floor(y1 * feat_height)`` (``region_lora/multi_lora_sample.py``
    ``get_region_mask`` and the other box users). A canonical box holds those same doubles
    (:func:`from_tlbr_pixels` divides the same way; a decimal ``d`` with integral ``d * size`` is the
    double ``round(d * size) / size``), so the products, and any double rounding in them, are
    upstream's: e.g. bottom 480 of 704 px on a 22-row grid gives ``480 / 704 * 22 = 14.999999999999998``
    and ends at row 14, as upstream. The tests hold upstream's pixel form as the reference. A box thinner than one cell
    comes out empty (``y0 >= y1`` or ``x0 >= x1``).
    """
    x0, y0, x1, y1 = box
    return (math.ceil(y0 * grid_h), math.floor(y1 * grid_h), math.ceil(x0 * grid_w), math.floor(x1 * grid_w))


def box_mask(box: Box, grid_h: int, grid_w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A float ``[grid_h, grid_w]`` mask that is 1 on the cells :func:`box_to_grid` selects."""
    import torch  # lazily: the spec layer (and `bench --help`) must not pay torch's import

    y0, y1, x0, x1 = box_to_grid(box, grid_h, grid_w)
    mask = torch.zeros(grid_h, grid_w, device=device)
    if y1 > y0 and x1 > x0:
        mask[y0:y1, x0:x1] = 1.0
    return mask
