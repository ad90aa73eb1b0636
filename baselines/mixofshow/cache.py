"""The fused-model cache: ``default_cache_dir()/fused/<key>/`` written atomically, so a benchmark fuses once.

A folder holds ``fused.safetensors`` (keys ``unet/<module>``, ``text_encoder/<module>``,
``token/<token>``) and ``fusion.json`` (settings, concepts and per-layer objectives). It is written
into a temporary sibling folder and renamed into place, so a killed fusion leaves nothing behind. A file
lock beside the folder (``<key>.lock``) lets one process fuse while the others wait and then read its result:
the workers of one run all sample with the same fused weights (fusions in two processes may differ in the
last bits, float summation order being per process).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from baselines.mixofshow.fusion import (
    FusedModel,
    FusionConcept,
    FusionConfig,
    LayerFit,
    fusion_key,
    gradient_fusion,
)
from bench.cache import default_cache_dir, entry_lock

WEIGHTS = "fused.safetensors"
META = "fusion.json"
_PARTS = ("unet", "text_encoder", "token")


def fused_cache_root() -> Path:
    """Where fused models live: ``default_cache_dir() / "fused"``."""
    return default_cache_dir() / "fused"


def save_fused(fused: FusedModel, folder: Path, meta: dict) -> None:
    """Write ``fused`` into ``folder`` atomically (temporary sibling folder, then rename)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tensors = {f"unet/{k}": v.contiguous() for k, v in fused.unet.items()}
        tensors.update({f"text_encoder/{k}": v.contiguous() for k, v in fused.text_encoder.items()})
        tensors.update({f"token/{k}": v.contiguous() for k, v in fused.token_embeddings.items()})
        save_file(tensors, str(tmp / WEIGHTS))
        fits = {k: asdict(v) for k, v in fused.fits.items()}
        (tmp / META).write_text(json.dumps({**meta, "fits": fits}, indent=1))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / WEIGHTS).is_file():  # not another process finishing the same fusion first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_fused(folder: Path) -> FusedModel:
    """Read a cached fused model; a damaged folder raises a clear error naming it."""
    try:
        tensors = load_file(str(folder / WEIGHTS))
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"fused-model cache '{folder}': expected {WEIGHTS} and {META} written by "
                         f"mix-of-show fusion ({err}); delete the folder to fuse again") from err
    parts: dict[str, dict] = {p: {} for p in _PARTS}
    for key, value in tensors.items():
        part, _, name = key.partition("/")
        if part not in parts:
            raise ValueError(f"fused-model cache '{folder / WEIGHTS}': key '{key}': expected a prefix in {_PARTS}")
        parts[part][name] = value
    fits = {k: LayerFit(**v) for k, v in meta.get("fits", {}).items()}
    return FusedModel(unet=parts["unet"], text_encoder=parts["text_encoder"], token_embeddings=parts["token"],
                      fits=fits)


def cached_fusion(pipe: StableDiffusionPipeline, concepts: Sequence[FusionConcept], config: FusionConfig,
                  root: Path | None = None, progress: bool = True) -> tuple[FusedModel, str, bool]:
    """The fused model of ``concepts`` on ``pipe``'s base weights: ``(model, key, cache_hit)``."""
    key = fusion_key(pipe, concepts, config)
    folder = (root or fused_cache_root()) / key
    with entry_lock(folder):
        if (folder / WEIGHTS).is_file():
            return load_fused(folder), key, True
        fused = gradient_fusion(pipe, concepts, config, progress=progress)
        meta = {"key": key, "config": asdict(config), "branch": "research",
                "concepts": [{"source": c.lora.source, "tokens": list(c.tokens)} for c in concepts]}
        save_fused(fused, folder, meta)
    return fused, key, False
