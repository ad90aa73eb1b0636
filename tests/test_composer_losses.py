"""LoRA-Composer's losses and re-initialization against hand computations on small synthetic maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from composer.losses import (
    LossWeights,
    composer_loss,
    enhancement_loss,
    fill_loss,
    gaussian_box_weight,
    region_loss,
    smooth,
    top_k_size,
)
from composer.reinit import best_window, reinitialize_latents

# The Attend-and-Excite kernel's 1-D factor as printed in the research notes (sigma 0.5, its quirk).
G = np.array([0.2119, 0.5761, 0.2119])


def hand_smooth(a: np.ndarray) -> np.ndarray:
    """3x3 separable smoothing with reflect padding, written out with loops."""
    h, w = a.shape
    kernel = np.outer(G, G) / np.outer(G, G).sum()

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)

    out = np.zeros_like(a)
    for y in range(h):
        for x in range(w):
            out[y, x] = sum(
                kernel[dy + 1, dx + 1] * a[reflect(y + dy, h), reflect(x + dx, w)]
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            )
    return out


@pytest.fixture
def attention() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 0.6, size=(5, 7)).astype(np.float64)


def test_smoothing_matches_hand_convolution(attention: np.ndarray) -> None:
    got = smooth(torch.tensor(attention, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, hand_smooth(attention), atol=2e-4)


def test_gaussian_box_weight_is_max_normalized_and_zero_outside() -> None:
    weight = gaussian_box_weight((1, 4, 2, 6), 5, 7).numpy()
    assert weight[0].sum() == 0 and weight[:, :2].sum() == 0 and weight[:, 6:].sum() == 0
    # 3 rows: u_y in {-1, 0, 1}; 4 cols: u_x in {-1, -1/3, 1/3, 1}; max at (0, +-1/3)
    peak = math.exp(-(1 / 9) / 2)
    assert weight[2, 3] == pytest.approx(1.0)
    assert weight[1, 2] == pytest.approx(math.exp(-(1 + 1) / 2) / peak, rel=1e-5)
    assert weight[2, 2] == pytest.approx(math.exp(-1 / 2) / peak, rel=1e-5)


def test_top_k_size_guards_empty_and_tiny_boxes() -> None:
    assert top_k_size((0, 0, 0, 3), 0.2) == 0
    assert top_k_size((0, 2, 0, 2), 0.2) == 1  # floor(0.8) = 0 would make topk(0).mean() NaN upstream
    assert top_k_size((0, 3, 0, 4), 0.2) == 2


def test_enhancement_loss_is_hinge_on_top_k_mean(attention: np.ndarray) -> None:
    box = (1, 4, 2, 6)
    weight = gaussian_box_weight(box, 5, 7).double()
    smoothed = hand_smooth(attention)
    k = 2  # floor(0.2 * 12)
    expected = max(0.0, 1.0 - np.sort((smoothed * weight.numpy()).ravel())[::-1][:k].mean())
    got = enhancement_loss(torch.tensor(smoothed), weight, k)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    saturated = enhancement_loss(torch.full((5, 7), 3.0, dtype=torch.float64), weight, k)
    assert float(saturated) == 0.0  # hinge clamps at 0


def test_fill_loss_is_axiswise_l1_of_max_projections(attention: np.ndarray) -> None:
    box = (1, 4, 2, 6)  # rows 1..3, cols 2..5
    a = hand_smooth(attention)
    in_box = np.zeros_like(a)
    in_box[1:4, 2:6] = a[1:4, 2:6]
    col_target = np.array([1.0 if 2 <= x < 6 else 0.0 for x in range(7)])
    row_target = np.array([1.0 if 1 <= y < 4 else 0.0 for y in range(5)])
    expected = sum(abs(in_box[:, x].max() - col_target[x]) for x in range(7)) / 7
    expected += sum(abs(in_box[y, :].max() - row_target[y]) for y in range(5)) / 5
    assert float(fill_loss(torch.tensor(a), box)) == pytest.approx(expected, rel=1e-9)


def test_region_loss_is_top_k_of_leak_to_out_of_box_keys() -> None:
    rng = np.random.default_rng(1)
    h, w = 3, 4
    s = rng.uniform(0, 0.2, size=(h * w, h * w))
    box = (0, 2, 1, 3)  # rows 0..1, cols 1..2 -> cells 1, 2, 5, 6
    inside = [1, 2, 5, 6]
    outside = [c for c in range(h * w) if c not in inside]
    leak = np.array([s[q, k] for q in inside for k in outside])
    k = 1  # max(1, floor(0.2 * 4))
    expected = np.sort(leak)[::-1][:k].mean()
    assert float(region_loss(torch.tensor(s), box, h, w, k)) == pytest.approx(expected, rel=1e-12)


def test_total_loss_sums_weighted_terms_over_regions_and_tokens(attention: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    h, w, tokens = 5, 7, 77
    maps = [torch.tensor(rng.uniform(0, 0.3, size=(h, w, tokens))) for _ in range(2)]
    s = torch.tensor(rng.uniform(0, 0.05, size=(h * w, h * w)))
    boxes = [(0, 3, 0, 3), (1, 5, 3, 7)]
    positions = [[2, 3], [5, 6]]
    total, parts = composer_loss(maps, s, boxes, positions, LossWeights(), h, w)
    expected = 0.0
    for r, box in enumerate(boxes):
        k = top_k_size(box, 0.2)
        weight = gaussian_box_weight(box, h, w).double()
        for p in positions[r]:
            a = torch.tensor(hand_smooth(maps[r][:, :, p].numpy()))
            expected += 8 * float(enhancement_loss(a, weight, k)) + 2 * float(fill_loss(a, box))
        expected += 10 * float(region_loss(s, box, h, w, k))
    assert float(total) == pytest.approx(expected, rel=1e-3)
    assert parts["enhancement"] + parts["fill"] + parts["region"] == pytest.approx(float(total), rel=1e-6)
    off = LossWeights(use_enhancement=False, use_fill=False, use_region=False)
    assert float(composer_loss(maps, s, boxes, positions, off, h, w)[0]) == 0.0


def test_best_window_finds_the_hot_patch() -> None:
    attention = torch.zeros(6, 9)
    attention[3:5, 5:8] = 1.0
    attention[0, 0] = 1.5  # a single hot cell loses against a full window
    assert best_window(attention, 2, 3) == (3, 5)


def test_reinitialization_moves_the_best_patch_into_the_box_and_renormalizes() -> None:
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 12, 16)
    maps = torch.zeros(1, 6, 8, 77)
    maps[0, 3:5, 5:8, 4] = 0.5  # token 4 hot in the 2x3 window at (3, 5)
    box = (0, 2, 1, 4)  # grid rows 0..1, cols 1..3
    result, windows = reinitialize_latents(latents, maps, [box], [[4, 5]], factor=2)
    assert windows == [(3, 5)]
    moved = latents.clone()
    moved[:, :, 0:4, 2:8] = latents[:, :, 6:10, 10:16]
    expected = (moved - moved.mean()) / moved.std() * latents.std() + latents.mean()
    torch.testing.assert_close(result, expected)
    assert float(result.mean()) == pytest.approx(float(latents.mean()), abs=1e-5)
    assert float(result.std()) == pytest.approx(float(latents.std()), rel=1e-5)
