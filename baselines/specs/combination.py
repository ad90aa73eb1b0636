"""``lora-switch``, ``lora-composite`` and ``lora-regional``: declarations (implementation:
:mod:`baselines.combination`)."""

from __future__ import annotations

from typing import Any

from baselines.specs import Factory
from bench.methods import MethodSpec

COMMON: dict[str, Any] = {"steps": 50, "guidance_scale": 7.5, "lora_weight": 1.0, "prompt": "global"}

WEIGHT_DEVIATION = ("LoRA weight: lora_weight (default 1.0, the weight the ED-LoRAs are merged with); upstream "
                    "scales each LoRA by --lora_scale 0.8")
SWITCH_DEVIATIONS = ("text encoder: each LoRA's own text-encoder deltas encode the prompt while it is active",
                     "concept order = scene region order (first occurrence)",
                     WEIGHT_DEVIATION)
COMPOSITE_DEVIATIONS = ("text encoder: each LoRA's own text-encoder deltas encode the prompt for its prediction",
                        WEIGHT_DEVIATION)
REGIONAL_DEVIATIONS = ("not an upstream method: a naive reference with no attention control, losses or re-init",)


def method_specs(switch: Factory, composite: Factory, regional: Factory) -> list[MethodSpec]:
    """``lora-switch``, ``lora-composite`` and ``lora-regional``, made by the given factories."""
    return [
        MethodSpec(name="lora-switch", create=switch, defaults={**COMMON, "switch_every": 5},
                   deviations=SWITCH_DEVIATIONS,
                   description="LoRA Switch (Multi-LoRA Composition): one concept LoRA active at a time, "
                               "switching every switch_every steps"),
        MethodSpec(name="lora-composite", create=composite, defaults=dict(COMMON),
                   deviations=COMPOSITE_DEVIATIONS,
                   description="LoRA Composite (Multi-LoRA Composition): the guided predictions of each "
                               "concept LoRA averaged every step"),
        MethodSpec(name="lora-regional", create=regional, defaults=dict(COMMON),
                   deviations=REGIONAL_DEVIATIONS,
                   description="naive per-region LoRA: each region's LoRA and prompt inside its box, base "
                               "model and global prompt outside, no constraints"),
    ]
