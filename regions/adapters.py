"""Optional T2I-Adapter conditions (sketch / keypose) with per-box weights (official L708-762).

Each adapter's features are weighted by a map holding the global weight, overwritten inside each box
by that region's weight, and the kinds are summed. The result goes to the UNet as
``down_intrablock_additional_residuals`` (diffusers adds them where the official fork's side-loads did).

LoRA-Composer and Mix-of-Show* share it; adapters come through the model front door (kind
``adapter``). An adapter parameter (``sketch_adapter`` / ``pose_adapter``) is ``auto`` (the built-in
tiny adapter of that kind with a built-in base model; not configured with a real one), ``none``
(skip that condition), ``builtin:NAME`` or a local diffusers T2IAdapter folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import T2IAdapter
from PIL import Image

from bench.boxes import Box, box_to_grid
from bench.models import BUILTIN_PREFIX, create
from bench.spec import Scene

AUTO = "auto"
OFF = ("", "none")
ADAPTER_PARAMS = {"sketch": "sketch_adapter", "pose": "pose_adapter"}
REAL_EXAMPLES = {"sketch": "TencentARC t2iadapter_sketch_sd14v1", "pose": "TencentARC t2iadapter_keypose_sd14v1"}


def load_adapter(ref: str | Path, kind: str, device: torch.device, dtype: torch.dtype,
                 method: str = "lora-composer") -> T2IAdapter:
    """A T2I-Adapter from ``builtin:NAME`` or a local diffusers folder; a clear error names the parameter."""
    where = f"{method} parameter '{ADAPTER_PARAMS.get(kind, kind)}'"
    adapter = create(str(ref), "adapter", where=where, dtype=dtype).to(device)
    return adapter if adapter.dtype == dtype else adapter.to(dtype=dtype)


def _adapter_folder(ref: str | Path, where: str) -> Path:
    folder = Path(ref).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"{where}: '{ref}' is not a local T2I-Adapter folder with config.json (as written by "
                         "T2IAdapter.save_pretrained)")
    return folder


def adapter_refs(scene: Scene, params: Mapping[str, Any], base_ref: str, method: str) -> dict[str, str]:
    """Kind -> adapter ref for every condition of a scene with image guidance ({} without guidance).

    ``auto`` becomes ``builtin:random-t2i-<kind>`` when ``base_ref`` is a built-in model; with a real base
    model it is an error naming the method and the parameter. ``none`` skips that condition. A folder
    without ``config.json`` fails here, before any model is loaded.
    """
    if not scene.image_guidance:
        return {}
    refs: dict[str, str] = {}
    unconfigured: list[str] = []
    for kind, param in ADAPTER_PARAMS.items():
        if kind not in scene.conditions:
            continue
        value = str(params.get(param, AUTO)).strip()
        if value.lower() in OFF:
            continue
        if value.lower() == AUTO:
            if not base_ref.startswith(BUILTIN_PREFIX):
                unconfigured.append(kind)
                continue
            value = f"{BUILTIN_PREFIX}random-t2i-{kind}"
        elif not value.startswith(BUILTIN_PREFIX):
            _adapter_folder(value, f"{method} parameter '{param}'")  # fail before any model is loaded
        refs[kind] = value
    if unconfigured:
        names = ", ".join(f"'{ADAPTER_PARAMS[k]}'" for k in unconfigured)
        names = f"parameters {names} are" if len(unconfigured) > 1 else f"parameter {names} is"
        examples = ", ".join(f"{REAL_EXAMPLES[k]} for {k}" for k in unconfigured)
        raise ValueError(
            f"{method}: scene '{scene.id}' uses image guidance ({', '.join(unconfigured)} condition), but "
            f"{names} 'auto', which picks a built-in adapter only for a built-in base model (this one "
            f"is '{base_ref}'); expected a local diffusers T2IAdapter folder (e.g. {examples}, converted to "
            f"diffusers), given as --param {method}.{ADAPTER_PARAMS[unconfigured[0]]}=/path/to/folder, or 'none' "
            "to ignore that condition"
        )
    if not refs:
        raise ValueError(
            f"{method}: scene '{scene.id}' has image_guidance on, but every adapter for its conditions "
            f"{sorted(scene.conditions)} is 'none'; expected 'auto' or a local diffusers T2IAdapter folder in "
            f"{[ADAPTER_PARAMS[k] for k in sorted(scene.conditions)]}"
        )
    return refs


def no_adapter_note(scene: Scene) -> str | None:
    """Why a scene is sampled without adapters (None when it uses image guidance)."""
    if scene.image_guidance:
        return None
    if not scene.conditions:
        return "scene has no image condition: sampled without adapter"
    return "scene has image_guidance false: sampled without adapter"


class SceneAdapters:
    """A method's adapters: each ref loaded once, then the weighted features of a scene's conditions."""

    def __init__(self, method: str):
        self.method = method
        self._loaded: dict[tuple[str, str, torch.device, torch.dtype], T2IAdapter] = {}

    def adapter(self, ref: str, kind: str, device: torch.device, dtype: torch.dtype) -> T2IAdapter:
        """The adapter of ``ref`` on ``device``/``dtype``, loaded on first use."""
        key = (ref, kind, device, dtype)
        if key not in self._loaded:
            self._loaded[key] = load_adapter(ref, kind, device, dtype, self.method)
        return self._loaded[key]

    def features(self, scene: Scene, refs: Mapping[str, str], condition_image: Callable[[Scene, str], Path],
                 device: torch.device, dtype: torch.dtype) -> list[torch.Tensor] | None:
        """The scene's region-weighted adapter residuals for ``refs`` (None when ``refs`` is empty)."""
        if not refs:
            return None
        adapters, images = {}, {}
        for kind, ref in refs.items():
            adapter = self.adapter(ref, kind, device, dtype)
            adapters[kind] = adapter
            images[kind] = condition_tensor(condition_image(scene, kind), adapter.config.in_channels,
                                            scene.width, scene.height)
        return adapter_residuals(adapters, images, [r.box for r in scene.regions],
                                 [r.adapter_weights for r in scene.regions], scene.adapter_global_weights)


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
