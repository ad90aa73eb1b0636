"""Training sets of the toy world, rendered from a seed."""

from __future__ import annotations

import numpy as np
import torch

from toyworld.world import MAX_OBJECTS, VARIED, Poses, ToyImage, sample_image


def render_set(count: int, seed: int, poses: Poses = VARIED, shape_only_share: float = 0.0,
               max_objects: int = MAX_OBJECTS) -> tuple[torch.Tensor, list[ToyImage]]:
    """``count`` random images as a uint8 ``[N, 3, 64, 64]`` tensor, plus their descriptions (images dropped);
    ``shape_only_share`` and ``max_objects`` as :func:`toyworld.world.sample_image`."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((count, 64, 64, 3), dtype=np.uint8)
    items: list[ToyImage] = []
    for i in range(count):
        item = sample_image(rng, poses, shape_only_share, max_objects)
        pixels[i] = np.asarray(item.image)
        item.image = None  # type: ignore[assignment]  # keep the metadata only; pixels live in the tensor
        items.append(item)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), items


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` to float in [-1, 1]."""
    return pixels.float().div(127.5).sub(1.0)
