"""LoRA merge: every concept LoRA merged into the base with equal weights, global prompt only.

The naive baseline users compare against (Mix-of-Show's "weight fusion" row uses the same
1/N weighting). The shared base pipeline is restored after each image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baselines.sampling import encode_pair, sample_layerwise
from bench.context import RunContext
from bench.lora.apply import lora_merged
from bench.methods import Generation, MethodSpec
from bench.spec import Scene

DEFAULTS: dict[str, Any] = {
    "steps": 50,
    "guidance_scale": 7.5,
    "normalize": True,
    "prompt": "global",
}


class LoraMerge:
    """Merges the scene's concept LoRAs into the base model for one image."""

    def __init__(self, params: Mapping[str, Any]):
        if params["prompt"] not in ("global", "global+regions"):
            raise ValueError("lora-merge.prompt: expected 'global' or 'global+regions'")
        self.params = dict(params)

    def generate(self, scene: Scene, seed: int, ctx: RunContext) -> Generation:
        """Merge, encode the prompt with every concept's layer-wise tokens, sample, restore."""
        concept_ids = ctx.spec.scene_concepts(scene)
        loras = [ctx.concept_lora(c) for c in concept_ids]
        weight = 1.0 / len(loras) if self.params["normalize"] else 1.0
        prompt = scene.prompt
        if self.params["prompt"] == "global+regions":
            prompt = ", ".join([scene.prompt, *(r.prompt for r in scene.regions)])
        pipe = ctx.base_pipeline(scene.style)
        with lora_merged(pipe.unet, pipe.text_encoder, loras, [weight] * len(loras)):
            embeddings = encode_pair(pipe, prompt, scene.negative_prompt, loras)
            image = sample_layerwise(pipe, embeddings, seed, scene.width, scene.height,
                                     self.params["steps"], self.params["guidance_scale"])
        return Generation(
            image=image,
            record={"params": self.params, "concepts": concept_ids, "lora_weight": weight, "prompt": prompt,
                    "scheduler": type(pipe.scheduler).__name__, "deviations": []},
        )


def method_spec() -> MethodSpec:
    """The registered ``lora-merge`` method."""
    return MethodSpec(
        name="lora-merge",
        description="all concept LoRAs merged into the base with equal weights (1/N), global prompt only",
        create=LoraMerge,
        defaults=DEFAULTS,
    )
