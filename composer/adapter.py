"""Optional T2I-Adapter conditions (sketch / keypose) with per-box weights (official L708-762).

Each adapter's features are weighted by a map holding the global weight, overwritten inside each box
by that region's weight, and the kinds are summed. The result goes to the UNet as
``down_intrablock_additional_residuals`` (diffusers adds them where the official fork's side-loads did).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import T2IAdapter
from PIL import Image

from bench.boxes import Box, box_to_grid


def load_adapter(path: str | Path, kind: str, device: torch.device, dtype: torch.dtype) -> T2IAdapter:
    """Load a T2I-Adapter from a local diffusers folder; a clear error names the parameter otherwise."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"lora-composer parameter '{kind}_adapter': '{path}' is not a local T2I-Adapter "
                         "folder with config.json (as written by T2IAdapter.save_pretrained)")
    return T2IAdapter.from_pretrained(folder, local_files_only=True).to(device=device, dtype=dtype)


def condition_tensor(image: Image.Image | str | Path, channels: int, width: int, height: int) -> torch.Tensor:
    """``[1, channels, H, W]`` in [0, 1]: grayscale for 1-channel adapters (sketch), RGB otherwise."""
    if not isinstance(image, Image.Image):
        image = Image.open(image)
    image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array)
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor[None]


def weight_map(boxes: Sequence[Box], box_weights: Sequence[float | None], global_weight: float,
               grid_h: int, grid_w: int) -> torch.Tensor:
    """``[h, w]`` filled with ``global_weight``, box cells overwritten by that box's weight (None: keep)."""
    weights = torch.full((grid_h, grid_w), float(global_weight))
    for box, weight in zip(boxes, box_weights, strict=True):
        if weight is None:
            continue
        y0, y1, x0, x1 = box_to_grid(box, grid_h, grid_w)
        if y1 > y0 and x1 > x0:
            weights[y0:y1, x0:x1] = float(weight)
    return weights


@torch.no_grad()
def adapter_residuals(
    adapters: Mapping[str, T2IAdapter],
    conditions: Mapping[str, torch.Tensor],
    boxes: Sequence[Box],
    region_weights: Sequence[Mapping[str, float]],
    global_weights: Mapping[str, float],
) -> list[torch.Tensor] | None:
    """The spatially weighted sum of every adapter's features, one tensor per UNet down level.

    ``global_weights[kind]`` defaults to 1.0 (the official CLI default); a region without a weight for a
    kind keeps the global weight there. Returns None when no adapter has a condition.
    """
    total: list[torch.Tensor] | None = None
    for kind, adapter in adapters.items():
        if kind not in conditions:
            continue
        image = conditions[kind].to(device=adapter.device, dtype=adapter.dtype)
        features = adapter(image)
        weighted = []
        for feature in features:
            h, w = feature.shape[-2:]
            wmap = weight_map(boxes, [rw.get(kind) for rw in region_weights], global_weights.get(kind, 1.0), h, w)
            weighted.append(feature * wmap.to(feature)[None, None])
        total = weighted if total is None else [a + b for a, b in zip(total, weighted, strict=True)]
    return total
