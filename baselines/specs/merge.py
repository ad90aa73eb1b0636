"""``lora-merge`` and ``lora-merge-composlora``: declarations (implementation: :mod:`baselines.merge`)."""

from __future__ import annotations

from typing import Any

from baselines.specs import Factory
from bench.methods import MethodSpec

NAME = "lora-merge"
DEFAULTS: dict[str, Any] = {
    "steps": 50,
    "guidance_scale": 7.5,
    "normalize": True,
    "prompt": "global",
}
COMPOSLORA_NAME = "lora-merge-composlora"
COMPOSLORA_DEFAULTS: dict[str, Any] = {
    "steps": 50,
    "guidance_scale": 7.5,
    "lora_weight": 0.8,
    "prompt": "global",
}
COMPOSLORA_DEVIATIONS = (
    "Concept LoRAs are the benchmark's ED-LoRAs (layer-wise token embeddings + UNet/text-encoder deltas), "
    "merged into the weights; upstream loads kohya LoRAs as PEFT adapters (same sum of scaled deltas).",
    "Prompt: the scene's global prompt with concept tokens (upstream: a fixed style prompt + each LoRA's "
    "trigger words); upstream's negative prompt is replaced by the scene's.",
    "Sampler: the base model's scheduler, steps=50 and guidance_scale=7.5 like the other baselines "
    "(upstream: DPM-Solver++, 200 steps, CFG 10, seed 111).",
)


def method_spec(create: Factory) -> MethodSpec:
    """The ``lora-merge`` method, made by ``create``."""
    return MethodSpec(
        name=NAME,
        description="all concept LoRAs merged into the base with equal weights (1/N), global prompt only",
        create=create,
        defaults=DEFAULTS,
    )


def composlora_method_spec(create: Factory) -> MethodSpec:
    """The ``lora-merge-composlora`` method (ComposLoRA's merge, each LoRA at 0.8), made by ``create``."""
    return MethodSpec(
        name=COMPOSLORA_NAME,
        description="ComposLoRA's LoRA merge (Multi-LoRA Composition): all concept LoRAs merged into the base, "
                    "each at lora_weight 0.8, global prompt only",
        create=create,
        defaults=COMPOSLORA_DEFAULTS,
        deviations=COMPOSLORA_DEVIATIONS,
    )
