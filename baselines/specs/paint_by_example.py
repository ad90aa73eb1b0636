"""``paint-by-example``: declaration, model resolution and availability check (implementation:
:mod:`baselines.paint_by_example`).

``model='auto'`` resolves by convention to the inpainting model of the base model's world: a base model
``builtin:<world>-sd`` gets ``builtin:<world>-pbe`` when a plugin registers it (``builtin:random-sd`` ->
``builtin:random-pbe``, random weights, for tests). A real base model, or a world without such a model
(the trained toy world), needs ``model=PATH`` of the released model; until then the method is unavailable
on that dataset, with the steps to set it up.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from baselines.specs import Factory
from baselines.specs.inpaint import (
    BACKGROUND_DEFAULTS,
    BACKGROUND_DEVIATIONS,
    STYLE_DEFAULTS,
    STYLE_DEVIATION,
    run_styles,
    style_skip,
)
from bench.methods import MethodSpec

NAME = "paint-by-example"
RANDOM_MODEL = "builtin:random-pbe"
HUB_ID = "Fantasy-Studio/Paint-by-Example"
REFERENCE_CROPS = ("mask", "none")
# Where diffusers 0.42 keeps the deprecated pipeline (checked as a file: importing it would import torch).
PIPELINE_FILE = ("pipelines", "deprecated", "paint_by_example", "pipeline_paint_by_example.py")

DEFAULTS: dict[str, Any] = {
    "model": "auto",
    "steps": 50,
    "guidance_scale": 5.0,
    "mode": "crop",
    "crop_size": "native",
    "crop_expand": 2.0,
    "paste_inside_box": True,
    "reference_crop": "mask",
    **BACKGROUND_DEFAULTS,
    **STYLE_DEFAULTS,
}
DEVIATIONS = (
    *BACKGROUND_DEVIATIONS,
    STYLE_DEVIATION,
    "Multi-concept use is not part of Paint-by-Example: each box is inpainted in sequence (protocol of "
    "baselines.md §D).",
    "mode 'crop' (default): the box expanded crop_expand times, square where the canvas allows, worked on at "
    "crop_size px and resized back ('native', the default: the model's own resolution, 512 for "
    "Fantasy-Studio/Paint-by-Example, which was trained at 512); mode 'full': the whole canvas.",
    "paste_inside_box (default on): only the box's pixels are replaced; the pipeline's VAE round trip of the "
    "rest of the window is discarded.",
    "reference_crop 'mask' (default): the reference is cropped to its subject's box in the concept's mask of "
    "the same name, widened by up to 10 px, as the released model's training references (open-images.py); "
    "without a mask, the whole image (recorded per box). 'none': always the whole image.",
    "The reference image goes through diffusers' CLIPImageProcessor (resize + centre crop 224); the original "
    "repo squashes it to 224x224.",
    "Sampler: the model's own scheduler (PNDM with skip_prk_steps for Fantasy-Studio/Paint-by-Example, i.e. "
    "PLMS as in the original repo).",
)


def setup_steps() -> str:
    """How to give the method the released model."""
    return (f"download the released model on a machine with network (huggingface-cli download {HUB_ID} "
            f"--local-dir models/Paint-by-Example) and pass --param {NAME}.model=models/Paint-by-Example")


def pipeline_missing() -> str | None:
    """None when the installed diffusers ships the deprecated PaintByExamplePipeline, else why not (no import)."""
    spec = importlib.util.find_spec("diffusers")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if any(Path(folder, *PIPELINE_FILE).is_file() for folder in folders):
        return None
    found = "not installed" if spec is None else f"installed without {'/'.join(PIPELINE_FILE)}"
    return (f"diffusers is {found}, so PaintByExamplePipeline cannot be imported. Install the pinned version: "
            "pip install 'diffusers>=0.42,<0.43'")


def inpainting_builtins() -> list[str]:
    """The ``builtin:`` inpainting models the loaded plugins register."""
    from bench.models import builtins

    return sorted(f"builtin:{name}" for name in builtins("inpainting"))


def auto_model(base_ref: str) -> str | None:
    """``builtin:<world>-pbe`` for a base model ``builtin:<world>-sd`` when it is registered, else None."""
    match = re.fullmatch(r"builtin:(.+)-sd", base_ref)
    if match is None:
        return None
    candidate = f"builtin:{match.group(1)}-pbe"
    return candidate if candidate in inpainting_builtins() else None


def resolve_model(model: str, base_ref: str, where: str) -> tuple[str | None, str | None]:
    """``(model reference, None)`` for the parameter ``model`` on a base model, or ``(None, why not)``.

    ``where`` names the base model's field, e.g. ``datasets/toy.yaml: base_models.real``.
    """
    if model != "auto":
        return model, None
    resolved = auto_model(base_ref)
    if resolved is not None:
        return resolved, None
    match = re.fullmatch(r"builtin:(.+)-sd", base_ref)
    if match is not None:
        return None, (
            f"parameter 'model' is 'auto', and the base model {base_ref} ({where}) has no Paint-by-Example model "
            f"of its world (no builtin:{match.group(1)}-pbe; registered: {inpainting_builtins()}); pass "
            f"--param {NAME}.model={RANDOM_MODEL} for a random-weight smoke run, or {setup_steps()}")
    return None, (
        f"parameter 'model' is 'auto', which resolves only for built-in base models, and the base model "
        f"'{base_ref}' ({where}) is not built in; expected model=PATH of a local {HUB_ID} diffusers folder: "
        f"{setup_steps()}")


def check_model(model: str) -> str | None:
    """None when an explicit ``model`` can be loaded here (a registered built-in, a diffusers folder), else why."""
    if model.startswith("builtin:"):
        known = inpainting_builtins()
        return None if model in known else f"parameter 'model': unknown built-in '{model}'; expected one of {known}"
    if (Path(model).expanduser() / "model_index.json").is_file():
        return None
    return (f"parameter 'model': '{model}' is not a diffusers folder with model_index.json; expected a local "
            f"{HUB_ID} folder: {setup_steps()}")


def unavailable(params: Mapping[str, Any] | None = None, dataset: Any = None) -> str | None:
    """None when the method can run with ``params`` on ``dataset`` (None: on any dataset whose base models
    resolve), else the reason and the steps to set it up.

    Checks: diffusers ships the pipeline; an explicit ``model`` exists; with ``model='auto'``, the base model
    of every style the method runs on (parameter ``styles``) in the dataset has a model of its world.
    """
    missing = pipeline_missing()
    if missing:
        return missing
    params = {**DEFAULTS, **(params or {})}
    model = str(params["model"])
    if model != "auto":
        return check_model(model)
    if dataset is None:
        return None
    styles = run_styles(params, NAME)
    used = [s for s in dict.fromkeys(scene.style for scene in dataset.scenes.values()) if s in styles]
    for style in used:
        base = dataset.base_models.get(style)
        if base is None:
            continue  # the missing base model is the asset check's error
        _, reason = resolve_model(model, str(base), f"{dataset.path}: base_models.{style}")
        if reason:
            return f"on dataset '{dataset.name}': {reason}"
    return None


def method_spec(create: Factory) -> MethodSpec:
    """The registered Paint-by-Example method, made by ``create``."""
    return MethodSpec(
        name=NAME,
        description="Paint-by-Example (diffusers port): base-model background, then each box inpainted "
        "in turn with a reference image of its concept.",
        create=create,
        defaults=DEFAULTS,
        deviations=DEVIATIONS,
        unavailable=unavailable,
        skip_scene=style_skip(NAME),
    )
