"""Box -> attention-grid quantisation against LoRA-Composer's own arithmetic.

Upstream (Young98CN/LoRA_Composer): ``inference/region_lora_sample.py`` ``prepare_text`` (L195-222)
normalises the integer pixel box ``[top, left, bottom, right]`` as ``pos[0] / height`` etc.;
``region_lora/multi_lora_sample.py`` ``register_region_aware_attention`` (L232-460: ``get_region_mask``,
``region_rewrite``, the concept region mask) and ``replace_latents`` (L186-229) then take
``math.ceil(start_h * feat_height)``, ``math.floor(end_h * feat_height)`` (same for widths).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench.boxes import box_mask, box_to_grid, from_tlbr_pixels
from bench.spec import load_spec

PAPER = Path(__file__).resolve().parents[1] / "datasets" / "paper.yaml"


def tlbr_to_grid(tlbr: Sequence[int], width: int, height: int, grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
    """The reference: upstream's grid box ``(y0, y1, x0, x1)`` from a pixel box ``[top, left, bottom, right]``.

    Literally LoRA-Composer's arithmetic (normalise by the image size, multiply by the grid size, ceil
    the start, floor the end); ``box_to_grid(from_tlbr_pixels(tlbr, width, height), grid_h, grid_w)``
    gives the same cells.
    """
    top, left, bottom, right = tlbr
    return (
        math.ceil(top / height * grid_h),
        math.floor(bottom / height * grid_h),
        math.ceil(left / width * grid_w),
        math.floor(right / width * grid_w),
    )



def grid_before(box: tuple[float, float, float, float], grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
    """``box_to_grid`` as it was before it matched upstream: 1e-9 added before ceil / floor."""
    x0, y0, x1, y1 = box
    eps = 1e-9
    return (math.ceil(y0 * grid_h - eps), math.floor(y1 * grid_h + eps), math.ceil(x0 * grid_w - eps),
            math.floor(x1 * grid_w + eps))


def paper_boxes() -> list[tuple[str, int, int, tuple[float, ...], tuple[int, int, int, int]]]:
    """(scene, width, height, canonical box, transcribed pixel [top, left, bottom, right]) of every paper region."""
    spec = load_spec(PAPER)
    comments = re.findall(
        r"box: \[[^\]]*\]\s+# pixels \[top, left, bottom, right\] = \[([\d, ]+)\]", PAPER.read_text(encoding="utf-8")
    )
    regions = [(s, r.box) for s in spec.scenes.values() for r in s.regions]
    assert len(comments) == len(regions) > 0
    out = []
    for text, (scene, box) in zip(comments, regions, strict=True):
        tlbr = tuple(int(v) for v in text.split(","))
        out.append((scene.id, scene.width, scene.height, tuple(box), tlbr))
    return out


def test_paper_layouts_keep_their_grid_boxes_at_every_level() -> None:
    """Every paper layout, at the loss level (H/32) and every attention level (H/8 .. H/64): the grid box is
    upstream's (from the pixel box) and the same as before the change."""
    for scene, width, height, box, tlbr in paper_boxes():
        assert from_tlbr_pixels(tlbr, width, height) == box, scene  # the canonical box holds upstream's doubles
        for factor in (8, 16, 32, 64):
            grid_h, grid_w = height // factor, width // factor
            got = box_to_grid(box, grid_h, grid_w)
            assert got == tlbr_to_grid(tlbr, width, height, grid_h, grid_w), (scene, factor)
            assert got == grid_before(box, grid_h, grid_w), (scene, factor)


def test_double_rounding_lands_where_upstream_does() -> None:
    """480 / 704 * 22 = 14.999999999999998: upstream's floor ends the box at row 14 (one cell smaller than
    the exact 15); the old 1e-9 nudge gave 15."""
    assert 480 / 704 * 22 == pytest.approx(15) and 480 / 704 * 22 < 15
    width, height = 512, 704
    box = from_tlbr_pixels([0, 0, 480, 512], width, height)
    assert box_to_grid(box, 22, 16) == tlbr_to_grid([0, 0, 480, 512], width, height, 22, 16) == (0, 14, 0, 16)
    assert grid_before(box, 22, 16) == (0, 15, 0, 16)
    assert box_mask(box, 22, 16).sum(dim=1).nonzero().flatten().tolist() == list(range(14))
    # as a start, the same product is ceiled to 15 by both
    start = from_tlbr_pixels([480, 0, 704, 512], width, height)
    assert box_to_grid(start, 22, 16)[:2] == tlbr_to_grid([480, 0, 704, 512], width, height, 22, 16)[:2] == (15, 22)
