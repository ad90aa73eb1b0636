"""``anydoor``: declaration and availability check (implementation: :mod:`baselines.anydoor`)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from baselines.specs import Factory
from baselines.specs.inpaint import (
    BACKGROUND_DEFAULTS,
    BACKGROUND_DEVIATIONS,
    STYLE_DEFAULTS,
    STYLE_DEVIATION,
    style_skip,
)
from bench.methods import MethodSpec

NAME = "anydoor"
ENV_COMMAND = "LCBENCH_ANYDOOR_CMD"
ENV_DEVICE = "LCBENCH_ANYDOOR_DEVICE"
PROTOCOL = "lcbench-anydoor/2"
DRIVER = Path(__file__).resolve().parent.parent / "anydoor_driver.py"

DEFAULTS: dict[str, Any] = {
    "command": "",
    "steps": 50,
    "guidance_scale": 5.0,
    "strength": 1.0,
    "crop_ratio": "seeded",
    "margin": 5,
    "timeout_s": 1800,
    **BACKGROUND_DEFAULTS,
    **STYLE_DEFAULTS,
}
DEVIATIONS = (
    *BACKGROUND_DEVIATIONS,
    STYLE_DEVIATION,
    "AnyDoor inserts one object per call; boxes are filled one by one (AnyDoor#92), each call's output is the "
    "next call's target.",
    "Target mask = the box rectangle (no shape control). Reference mask = the concept's mask image of the same "
    "name when the spec gives a masks folder, else the whole reference image (recorded per box).",
    "Context crop ratio: upstream draws randint(15, 30) / 10 from unseeded numpy; here it is drawn from a "
    "generator seeded with the box seed (crop_ratio='seeded') or fixed (crop_ratio=<number>).",
    "Mask-channel padding follows the gradio demo (-1), not run_inference.py (which wraps to 1 via uint8).",
    "The collage is built by the driver at box_yyxx in the 512 px frame (one resize instead of upstream's "
    "resize to the crop box, then to 512).",
    "Not copied: upstream (run_inference.py and the gradio demo) drops the first row of the 512 px prediction "
    "(pred[1:]) before crop_back, stretching it by one row; here the whole 512 px prediction is resized back.",
)


def documented_command(python: str = '"$ANYDOOR_HOME/venv/bin/python"') -> str:
    """The shell command that starts the driver of this checkout inside ``$ANYDOOR_HOME``.

    ``python`` is the AnyDoor environment's interpreter; ``$ANYDOOR_HOME`` is expanded by the shell
    when the bench starts the command.
    """
    return f'{python} {shlex.quote(str(DRIVER))} --anydoor-home "$ANYDOOR_HOME"'


def setup_steps() -> str:
    """The exact steps to make AnyDoor available."""
    return (
        "AnyDoor runs out of process. 1) git clone https://github.com/ali-vilab/AnyDoor $ANYDOOR_HOME; "
        "2) create its own environment at $ANYDOOR_HOME/venv (python 3.8, the pins of its environment.yaml: "
        "torch 2.0.0, pytorch_lightning 1.5.0, transformers 4.19.2, open_clip_torch 2.17.1, omegaconf 2.1.1, "
        "einops, opencv-python); "
        "3) download epoch=1-step=8687.ckpt (HF space xichenhku/AnyDoor or ModelScope damo/AnyDoor) and "
        "dinov2_vitg14_pretrain.pth, and set their paths in configs/inference.yaml and configs/anydoor.yaml; "
        f"4) export ANYDOOR_HOME and {ENV_COMMAND}='{documented_command()}' "
        "(or pass the method parameter command=...). The driver (baselines/anydoor_driver.py, protocol "
        f"{PROTOCOL}) puts $ANYDOOR_HOME first on sys.path, imports cldm.model, cldm.ddim_hacked and "
        "datasets.data_utils from it, loads the model once and then serves one request per box; "
        f"{ENV_DEVICE} overrides its device (default cuda)."
    )


def unavailable(params: Mapping[str, Any] | None = None, dataset: Any = None) -> str | None:
    """None when an AnyDoor command is configured (parameter ``command`` or the environment), else the setup steps."""
    configured = str((params or {}).get("command") or "").strip() or os.environ.get(ENV_COMMAND, "").strip()
    return None if configured else setup_steps()


def method_spec(create: Factory) -> MethodSpec:
    """The registered AnyDoor method (unavailable until its external command is configured), made by ``create``."""
    return MethodSpec(
        name=NAME,
        description="AnyDoor (official code, out of process): base-model background, then each concept "
        "inserted into its box in turn from a reference image and mask.",
        create=create,
        defaults=DEFAULTS,
        deviations=DEVIATIONS,
        unavailable=unavailable,
        skip_scene=style_skip(NAME),
    )
