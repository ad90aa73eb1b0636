"""Driver that runs inside an AnyDoor checkout and its own environment, speaking ``lcbench-anydoor/2``.

The bench never imports this file; it starts it as a long-lived process (see :mod:`baselines.anydoor`,
``documented_command()``)::

    "$ANYDOOR_HOME/venv/bin/python" /path/to/lcbench/baselines/anydoor_driver.py --anydoor-home "$ANYDOOR_HOME"

Run by path, Python would put this script's folder, not the checkout, on ``sys.path``; so the driver
puts the checkout (``--anydoor-home``, default ``$ANYDOOR_HOME``, else the working directory) at the
front of ``sys.path``, drops its own folder from it, and changes into the checkout (upstream reads
``./configs`` relative to the working directory). It imports upstream's ``cldm.model``
(``create_model``, ``load_state_dict``), ``cldm.ddim_hacked.DDIMSampler`` and
``datasets.data_utils.sobel`` (upstream main's ``datasets/`` package), and needs the checkout's own
pinned environment (python 3.8, torch 2.0, pytorch_lightning 1.5, omegaconf, einops, opencv).

Protocol ``lcbench-anydoor/2``:

- requests: one absolute path per line on stdin, each a JSON file (fields in :mod:`baselines.anydoor`,
  file paths in it absolute too); EOF ends the process (exit 0);
- answers: one JSON line per request on stdout, ``{"protocol", "request", "ok", ...}``: on success
  ``output`` (the 512 px PNG written), ``device``, ``model_loads``, ``config_file``,
  ``pretrained_model`` and ``anydoor_home``; on failure ``error`` (the driver keeps serving).
  Everything else upstream prints goes to stderr, so stdout carries answers only;
- the model is created and its checkpoint loaded once per device, on the first request: once per
  process;
- device: the request's ``device`` field, else ``$LCBENCH_ANYDOOR_DEVICE``, else ``cuda`` as upstream
  (upstream's ``DDIMSampler`` moves its buffers to cuda anyway; other devices are for stub checkouts);
- one-shot use: ``anydoor_driver.py [--anydoor-home DIR] REQUEST.json ...`` answers those files and
  exits 1 if one failed.

Written for python >= 3.8 (AnyDoor's environment).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any, TextIO

PROTOCOL = "lcbench-anydoor/2"
DEVICE_ENV = "LCBENCH_ANYDOOR_DEVICE"


def use_checkout(home: str) -> str:
    """Make the AnyDoor checkout importable (first on ``sys.path``) and the working directory."""
    home = os.path.abspath(home)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    sys.path.insert(0, home)
    os.chdir(home)
    return home


def answer_stream() -> TextIO:
    """The real stdout, kept for answers; fd 1 and ``sys.stdout`` then point to stderr."""
    sys.stdout.flush()
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return answers


class Server:
    """Upstream's model, created once per device, answering requests."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[Any, Any]] = {}
        self.loads = 0
        self.config: dict[str, str] = {}

    def model(self, device: str) -> tuple[Any, Any]:
        """The model and DDIM sampler on ``device`` (upstream ``run_inference.py`` start-up)."""
        if device not in self.models:
            from cldm.ddim_hacked import DDIMSampler
            from cldm.model import create_model, load_state_dict
            from omegaconf import OmegaConf

            config = OmegaConf.load("./configs/inference.yaml")
            model = create_model(config.config_file).cpu()
            model.load_state_dict(load_state_dict(config.pretrained_model, location=device))
            model = model.to(device)
            self.models[device] = (model, DDIMSampler(model))
            self.loads += 1
            self.config = {"config_file": str(config.config_file), "pretrained_model": str(config.pretrained_model),
                           "anydoor_home": os.getcwd()}
        return self.models[device]

    def run(self, request_path: str) -> dict[str, Any]:
        """Serve one request file; returns the answer's fields."""
        import cv2
        import einops
        import numpy as np
        import torch
        from datasets.data_utils import sobel
        from PIL import Image
        from pytorch_lightning import seed_everything

        with open(request_path) as handle:
            req = json.load(handle)
        if req.get("protocol") != PROTOCOL:
            raise ValueError(f"unsupported protocol {req.get('protocol')!r}; expected {PROTOCOL!r}")
        device = str(req.get("device") or os.environ.get(DEVICE_ENV) or "cuda")
        model, sampler = self.model(device)

        ref = np.array(Image.open(req["reference_image"]).convert("RGB"))
        ref_mask = np.array(Image.open(req["reference_mask"]).convert("L"))
        target = np.array(Image.open(req["target_image"]).convert("RGB"))
        hint_mask = np.load(req["hint_mask"]).astype(np.float32)
        y1, y2, x1, x2 = (int(v) for v in req["box_yyxx"])
        collage = target.copy()
        collage[y1:y2, x1:x2] = cv2.resize(sobel(ref, ref_mask / 255), (x2 - x1, y2 - y1))
        hint = np.concatenate([collage.astype(np.float32) / 127.5 - 1.0, hint_mask[..., None]], -1)

        seed_everything(int(req["seed"]))
        control = einops.rearrange(torch.from_numpy(hint).float().to(device)[None], "b h w c -> b c h w").clone()
        clip_input = einops.rearrange(torch.from_numpy(ref / 255.0).float().to(device)[None], "b h w c -> b c h w")
        cond = {"c_concat": [control], "c_crossattn": [model.get_learned_conditioning(clip_input)]}
        uncond_context = model.get_learned_conditioning([torch.zeros((1, 3, 224, 224))])
        un_cond = {"c_concat": [control], "c_crossattn": [uncond_context]}
        model.control_scales = [float(req["strength"])] * 13
        samples, _ = sampler.sample(
            int(req["steps"]),
            1,
            (4, 64, 64),
            cond,
            verbose=False,
            eta=0.0,
            unconditional_guidance_scale=float(req["guidance_scale"]),
            unconditional_conditioning=un_cond,
        )
        decoded = model.decode_first_stage(samples)
        pred = (einops.rearrange(decoded, "b c h w -> b h w c") * 127.5 + 127.5).cpu().numpy()[0]
        Image.fromarray(np.clip(pred, 0, 255).astype(np.uint8)).save(req["output"])
        return {"output": req["output"], "device": device, "model_loads": self.loads, **self.config}

    def answer(self, request_path: str) -> dict[str, Any]:
        """The protocol answer for one request; errors become ``ok: false`` answers."""
        base = {"protocol": PROTOCOL, "request": request_path}
        try:
            return {**base, "ok": True, **self.run(request_path)}
        except Exception:  # noqa: BLE001 - reported to the bench, which raises it; the driver keeps serving
            traceback.print_exc()
            return {**base, "ok": False, "error": traceback.format_exc(limit=6)[-4000:]}


def _stdin_paths() -> Iterable[str]:
    for line in iter(sys.stdin.readline, ""):
        yield line.strip()


def main(argv: list | None = None) -> int:
    """Serve request paths from the command line (one-shot) or from stdin (persistent)."""
    parser = argparse.ArgumentParser(description=f"AnyDoor driver ({PROTOCOL})")
    parser.add_argument("--anydoor-home", default=os.environ.get("ANYDOOR_HOME") or os.getcwd(),
                        help="the AnyDoor checkout (default: $ANYDOOR_HOME, else the working directory)")
    parser.add_argument("requests", nargs="*", help="request files to answer and exit (default: read stdin)")
    args = parser.parse_args(argv)
    requests = [os.path.abspath(p) for p in args.requests]  # before changing into the checkout
    use_checkout(args.anydoor_home)
    answers = answer_stream()
    server = Server()
    failed = 0
    for path in requests or _stdin_paths():
        if not path:
            continue
        reply = server.answer(path)
        failed += not reply["ok"]
        answers.write(json.dumps(reply) + "\n")
        answers.flush()
    return 1 if failed and requests else 0


if __name__ == "__main__":
    sys.exit(main())
