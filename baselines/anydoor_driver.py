"""Driver that runs inside AnyDoor's own environment and speaks the ``lcbench-anydoor/1`` protocol.

It is never imported by the bench: copy or point to it, and run it from the AnyDoor checkout
(its modules read ``./configs`` relative to the working directory)::

    export LCBENCH_ANYDOOR_CMD='cd $ANYDOOR_HOME && $ANYDOOR_HOME/venv/bin/python /path/to/anydoor_driver.py'

The bench has already done upstream's geometry (see :mod:`baselines.anydoor`); this script builds
the high-frequency collage with upstream's ``sobel``, samples with upstream's ``DDIMSampler`` and
writes the 512 px result. NOT exercised by the test suite: it needs AnyDoor's pinned environment,
its checkpoints and a GPU. The model is loaded once per call (one call per box).
"""

from __future__ import annotations

import json
import sys


def main(request_path: str) -> None:
    """Serve one request file."""
    import cv2
    import einops
    import numpy as np
    import torch
    from anydoor_datasets.data_utils import sobel
    from cldm.ddim_hacked import DDIMSampler
    from cldm.model import create_model, load_state_dict
    from omegaconf import OmegaConf
    from PIL import Image
    from pytorch_lightning import seed_everything

    with open(request_path) as handle:
        req = json.load(handle)
    if req.get("protocol") != "lcbench-anydoor/1":
        raise SystemExit(f"unsupported protocol {req.get('protocol')!r}; expected 'lcbench-anydoor/1'")
    config = OmegaConf.load("./configs/inference.yaml")
    model = create_model(config.config_file).cpu()
    model.load_state_dict(load_state_dict(config.pretrained_model, location="cuda"))
    model = model.cuda()
    sampler = DDIMSampler(model)

    ref = np.array(Image.open(req["reference_image"]).convert("RGB"))
    ref_mask = np.array(Image.open(req["reference_mask"]).convert("L"))
    target = np.array(Image.open(req["target_image"]).convert("RGB"))
    hint_mask = np.load(req["hint_mask"]).astype(np.float32)
    y1, y2, x1, x2 = req["box_yyxx"]
    collage = target.copy()
    collage[y1:y2, x1:x2] = cv2.resize(sobel(ref, ref_mask / 255), (x2 - x1, y2 - y1))
    hint = np.concatenate([collage.astype(np.float32) / 127.5 - 1.0, hint_mask[..., None]], -1)

    seed_everything(int(req["seed"]))
    control = einops.rearrange(torch.from_numpy(hint).float().cuda()[None], "b h w c -> b c h w").clone()
    clip_input = einops.rearrange(torch.from_numpy(ref / 255.0).float().cuda()[None], "b h w c -> b c h w")
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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: anydoor_driver.py REQUEST.json")
    main(sys.argv[1])
