"""LoRA merge baselines: every concept LoRA merged into the base model, global prompt only.

- ``lora-merge``: equal weights 1/N (``normalize=True``), as Mix-of-Show's "weight fusion" row
  (research_branch ``scripts/mixofshow_scripts/Weight_Fusion_EDLoRA.py``: W0 + sum_i (alpha_i / N) dW_i);
- ``lora-merge-composlora``: ComposLoRA's "merge" (Multi-LoRA-Composition ``compose_lora.py``,
  ``--method merge``): every LoRA active at once, each scaled by ``--lora_scale`` 0.8, i.e.
  W0 + sum_i 0.8 dW_i (``set_adapters(cur_loras)`` with unit adapter weights, then
  ``cross_attention_kwargs={"scale": 0.8}``, which diffusers also applies to the text encoder's LoRA).

The shared base pipeline is restored after each image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baselines.sampling import encode_pair, sample_layerwise
from baselines.specs import merge as declared
from baselines.specs.merge import (  # noqa: F401 - the declarations, re-exported where they were
    COMPOSLORA_DEFAULTS,
    COMPOSLORA_DEVIATIONS,
    COMPOSLORA_NAME,
    DEFAULTS,
)
from bench.context import RunContext
from bench.lora.apply import lora_merged
from bench.methods import Generation, MethodSpec
from bench.spec import Scene


def _prompt(scene: Scene, mode: str) -> str:
    if mode == "global+regions":
        return ", ".join([scene.prompt, *(r.prompt for r in scene.regions)])
    return scene.prompt


class LoraMerge:
    """Merges the scene's concept LoRAs into the base model for one image (``lora-merge``)."""

    name = "lora-merge"
    deviations: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, Any]):
        if params["prompt"] not in ("global", "global+regions"):
            raise ValueError(f"{self.name}.prompt: expected 'global' or 'global+regions'")
        self.params = dict(params)

    def weight(self, count: int) -> float:
        """Each LoRA's merge weight when ``count`` LoRAs are merged: 1/N, or 1 without ``normalize``."""
        return 1.0 / count if self.params["normalize"] else 1.0

    def generate(self, scene: Scene, seed: int, ctx: RunContext) -> Generation:
        """Merge, encode the prompt with every concept's layer-wise tokens, sample, restore."""
        concept_ids = ctx.spec.scene_concepts(scene)
        loras = [ctx.concept_lora(c) for c in concept_ids]
        weight = self.weight(len(loras))
        prompt = _prompt(scene, self.params["prompt"])
        pipe = ctx.base_pipeline(scene.style)
        with lora_merged(pipe.unet, pipe.text_encoder, loras, [weight] * len(loras)):
            embeddings = encode_pair(pipe, prompt, scene.negative_prompt, loras)
            image = sample_layerwise(pipe, embeddings, seed, scene.width, scene.height,
                                     self.params["steps"], self.params["guidance_scale"])
        return Generation(
            image=image,
            record={"concepts": concept_ids, "lora_weight": weight, "prompt": prompt,
                    "scheduler": type(pipe.scheduler).__name__},
        )


class ComposLoraMerge(LoraMerge):
    """ComposLoRA's merge (``lora-merge-composlora``): every LoRA at ``lora_weight`` (upstream 0.8), no 1/N."""

    name = COMPOSLORA_NAME
    deviations = COMPOSLORA_DEVIATIONS

    def weight(self, count: int) -> float:
        """``lora_weight`` for every LoRA, whatever their number (upstream ``--lora_scale``)."""
        return float(self.params["lora_weight"])


def method_specs() -> list[MethodSpec]:
    """Both merge baselines, ``lora-merge`` (1/N) and ``lora-merge-composlora`` (0.8 each), made by the classes here."""
    return [declared.method_spec(LoraMerge), declared.composlora_method_spec(ComposLoraMerge)]
