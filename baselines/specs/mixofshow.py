"""``mix-of-show`` and ``mix-of-show-adapter``: declarations (implementation: :mod:`baselines.mixofshow.method`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from baselines.specs import Factory
from bench.methods import MethodSpec

# The regional sampler's scheduler: 'model' = the one the base model ships (research branch), or one by name.
SCHEDULERS = ("model", "dpm-solver++", "ddim", "pndm")

DEFAULTS: dict[str, Any] = {
    "steps": 50,
    "guidance_scale": 7.5,
    "scheduler": "model",
    "fuse": "style",  # 'style': every concept of the scene's style (upstream's one fused model); 'scene'
    "text_iters": 500,
    "unet_iters": 50,
    "text_alpha": 1.0,
    "unet_alpha": 1.0,
    "spatial_steps": 50,
    "spatial_size": "native",  # 'native': the base model's own resolution (512 for SD1.5, as upstream)
    "fusion_seed": 0,
    "image_conditions": False,
    "sketch_adapter": "auto",  # 'auto', 'none', builtin:NAME or a diffusers T2IAdapter folder (regions.adapters)
    "pose_adapter": "auto",
}

DEVIATIONS: tuple[str, ...] = (
    "research branch (the paper's setting): DDIM activation sampling with all steps recorded, fp32 fusion; "
    "regional sampling with the scheduler the base model ships (scheduler='model', the default: a diffusers "
    "folder's scheduler/ config, PNDM with skip_prk_steps (PLMS) for ChilloutMix; a single-file checkpoint: "
    "the SD1.x configs' PNDM; a built-in model: its own). scheduler='dpm-solver++' is the main branch's "
    "sampler; each image records the scheduler it used",
    "fusion streams activations into per-layer Gram matrices X^T X instead of storing them: the same "
    "objective exactly (no subsampling), bounded memory; L-BFGS runs on it in float64",
    "fusion targets (W0 + alpha dW_i) X_i are computed analytically instead of recorded from hooked outputs",
    "the spatial-stage latent is drawn from a seeded CPU generator (fusion_seed); upstream uses global RNG",
    "regional sampling is the region mechanism shared with LoRA-Composer, with the fused model as the source of "
    "the region keys/values; region outputs are averaged after to_out.0 (identical: the shares sum to one)",
    "T2I-Adapter through diffusers' T2IAdapter (diffusers-format folders) and "
    "down_intrablock_additional_residuals instead of the research fork's Adapter class",
    "initial noise drawn on the CPU with torch.Generator (bench convention)",
)


def method_specs(create: Factory) -> Sequence[MethodSpec]:
    """``mix-of-show`` and ``mix-of-show-adapter`` (Mix-of-Show*, with T2I-Adapter conditions), made by ``create``."""
    with_conditions = {**DEFAULTS, "image_conditions": True}
    return [
        MethodSpec(name="mix-of-show", create=create, defaults=DEFAULTS, deviations=DEVIATIONS,
                   description="Mix-of-Show (research branch): gradient fusion of the ED-LoRAs, regionally "
                               "controllable sampling with region prompts and boxes"),
        MethodSpec(name="mix-of-show-adapter", create=create, defaults=with_conditions, deviations=DEVIATIONS,
                   description="Mix-of-Show*: as mix-of-show, plus T2I-Adapter sketch/keypose conditions with "
                               "per-region weights (scenes without image guidance: exactly mix-of-show)"),
    ]
