"""Loading base models from local paths: a diffusers folder, a single-file checkpoint, or a built-in tiny model.

There is no network at run time: a hub id fails at once with a message saying what to download
and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from bench.tiny_models import build_tiny_pipeline, sd_scheduler

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = {"tiny-sd": build_tiny_pipeline}


class ModelError(ValueError):
    """A base model cannot be loaded; the message names the path and what was expected."""


def load_base_model(
    ref: str, where: str = "base model", dtype: torch.dtype = torch.float32
) -> StableDiffusionPipeline:
    """Load a Stable Diffusion 1.x pipeline from ``builtin:NAME``, a diffusers folder or a single file.

    ``where`` names the spec field the reference came from, for error messages.
    """
    if ref.startswith(BUILTIN_PREFIX):
        name = ref[len(BUILTIN_PREFIX) :]
        if name not in BUILTIN_MODELS:
            raise ModelError(f"{where}: unknown built-in model '{ref}'; expected one of "
                             f"{[BUILTIN_PREFIX + n for n in BUILTIN_MODELS]}")
        pipe = BUILTIN_MODELS[name]()
    else:
        pipe = _load_local(Path(ref).expanduser(), ref, where, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dtype=dtype)


def _load_local(path: Path, ref: str, where: str, dtype: torch.dtype) -> StableDiffusionPipeline:
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{where}: '{path}' is a folder without model_index.json; expected a diffusers "
                             "pipeline folder (as written by save_pretrained)")
        pipe = StableDiffusionPipeline.from_pretrained(
            path, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True
        )
    elif path.is_file():
        if path.suffix not in (".safetensors", ".ckpt"):
            raise ModelError(f"{where}: '{path}' has suffix '{path.suffix}'; expected a diffusers folder, "
                             "a .safetensors or a .ckpt file")
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), torch_dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True
        )
    elif _looks_like_hub_id(ref):
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise ModelError(
            f"{where}: '{ref}' looks like a Hugging Face hub id, and the bench loads models only from local "
            f"paths{' (HF_HUB_OFFLINE is set)' if offline else ''}. Download it on a machine with network, e.g. "
            f"`huggingface-cli download {ref} --local-dir models/{ref.split('/')[-1]}`, then give that folder's path."
        )
    else:
        raise ModelError(f"{where}: '{path}' does not exist; expected a diffusers folder, a .safetensors or "
                         "a .ckpt file")
    pipe.scheduler = type(sd_scheduler()).from_config(pipe.scheduler.config)
    return pipe


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))
