"""Diffusers models from local paths: SD1.x pipelines (folder or single file) and T2I-Adapters; decoding.

These are the core's loaders behind :func:`bench.models.create` (kinds ``pipeline`` and ``adapter``),
registered by the core's own plugin. There is no network at run time: a hub id fails at once with a
message saying what to download and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, T2IAdapter
from PIL import Image

from bench.configs import sd15_config_dir
from bench.models import ModelError, create, looks_like_hub_id
from bench.safeload import WeightsFileError, load_weights_only


def sd_scheduler() -> DPMSolverMultistepScheduler:
    """The DPM-Solver++ scheduler with SD1.x betas."""
    return DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


# A locally loaded pipeline -> the scheduler its folder or file shipped (the loader swaps in DPM-Solver++).
_SHIPPED_SCHEDULERS: WeakKeyDictionary[Any, Any] = WeakKeyDictionary()


def shipped_scheduler(pipe: StableDiffusionPipeline) -> Any:
    """A fresh instance of the scheduler the model ships: a local diffusers folder's ``scheduler/`` (a
    single file's: that of its configs), which :func:`load_local_pipeline` replaces by DPM-Solver++; a
    pipeline made any other way (a built-in) ships the scheduler it has."""
    original = _SHIPPED_SCHEDULERS.get(pipe, pipe.scheduler)
    return type(original).from_config(original.config)


def load_base_model(
    ref: str,
    where: str = "base model",
    dtype: torch.dtype = torch.float32,
    *,
    single_file_config: str | Path | None = None,
) -> StableDiffusionPipeline:
    """A Stable Diffusion 1.x pipeline from ``builtin:NAME``, a diffusers folder or a single file.

    ``where`` names the spec field the reference came from, for error messages. A single file
    (``.safetensors``/``.ckpt``, original LDM key layout) is built with the diffusers configs in
    ``single_file_config`` (a local diffusers folder; weights not needed), by default the shipped
    SD1.5 configs; it is ignored for the other kinds of reference.
    """
    options = {} if single_file_config is None else {"single_file_config": single_file_config}
    pipe = create(ref, "pipeline", where=where, dtype=dtype, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe if pipe.unet.dtype == dtype else pipe.to(dtype=dtype)


def load_local_pipeline(
    ref: str, *, where: str, dtype: torch.dtype = torch.float32, single_file_config: str | Path | None = None
) -> StableDiffusionPipeline:
    """The ``pipeline`` loader: a local diffusers folder or an original-layout single file."""
    return _load_local(Path(ref).expanduser(), ref, where, dtype, single_file_config)


def load_local_adapter(ref: str, *, where: str, dtype: torch.dtype = torch.float32) -> T2IAdapter:
    """The ``adapter`` loader: a local diffusers T2I-Adapter folder (as ``T2IAdapter.save_pretrained`` writes)."""
    folder = Path(ref).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelError(f"{where}: '{ref}' is not a local T2I-Adapter folder with config.json (as written by "
                         "T2IAdapter.save_pretrained)")
    return T2IAdapter.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)


@torch.no_grad()
def decode(pipe: StableDiffusionPipeline, latents: torch.Tensor) -> Image.Image:
    """VAE-decode latents into a PIL image exactly as StableDiffusionPipeline does."""
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


def _load_local(
    path: Path, ref: str, where: str, dtype: torch.dtype, single_file_config: str | Path | None
) -> StableDiffusionPipeline:
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
        pipe = _load_single_file(path, where, dtype, single_file_config)
    elif looks_like_hub_id(ref):
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise ModelError(
            f"{where}: '{ref}' looks like a Hugging Face hub id, and the bench loads models only from local "
            f"paths{' (HF_HUB_OFFLINE is set)' if offline else ''}. Download it on a machine with network, e.g. "
            f"`huggingface-cli download {ref} --local-dir models/{ref.split('/')[-1]}`, then give that folder's path."
        )
    else:
        raise ModelError(f"{where}: '{path}' does not exist; expected a diffusers folder, a .safetensors or "
                         "a .ckpt file")
    _SHIPPED_SCHEDULERS[pipe] = pipe.scheduler
    pipe.scheduler = type(sd_scheduler()).from_config(pipe.scheduler.config)
    return pipe


def _load_single_file(
    path: Path, where: str, dtype: torch.dtype, config: str | Path | None
) -> StableDiffusionPipeline:
    config_dir = sd15_config_dir() if config is None else _user_config_dir(Path(config).expanduser(), where)
    if path.suffix == ".ckpt":
        _check_weights_only(path, where)
    try:
        return StableDiffusionPipeline.from_single_file(
            str(path),
            config=str(config_dir),
            torch_dtype=dtype,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=True,
        )
    except Exception as err:  # diffusers raises many types; all mean "this file does not fit these configs"
        raise ModelError(
            f"{where}: '{path}' could not be loaded as a single-file Stable Diffusion checkpoint with the "
            f"diffusers configs in '{config_dir}' ({type(err).__name__}: {err}); expected an original-layout "
            "(LDM) checkpoint of the model family those configs describe (default: SD1.x); for another "
            "family pass single_file_config=<a diffusers folder of that family>"
        ) from err


def _user_config_dir(config: Path, where: str) -> Path:
    if not (config / "model_index.json").is_file():
        raise ModelError(
            f"{where}: single_file_config '{config}' is not a folder with model_index.json; expected a local "
            "diffusers pipeline folder (configs are enough: model_index.json, unet/, vae/, text_encoder/, "
            "tokenizer/, scheduler/)"
        )
    return config


def _check_weights_only(path: Path, where: str) -> None:
    """Refuse a .ckpt whose pickle holds anything but tensors and plain containers; runs none of it."""
    try:
        load_weights_only(path, mmap=True)
    except WeightsFileError as err:
        if err.carries_code:  # never torch's advice to load it unsafely
            raise ModelError(f"{where}: '{path}': expected a plain state dict; {err.reason}") from err
        raise ModelError(
            f"{where}: '{path}' is not a readable torch checkpoint ({err.detail}); expected a .ckpt written by "
            "torch.save"
        ) from err
