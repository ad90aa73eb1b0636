"""LoRA combination baselines users compare against (Multi-LoRA Composition, Zhong et al. 2024, and a naive one).

- ``lora-switch``: one LoRA active at a time, the active one changing every ``switch_every`` steps
  (concepts in scene order, cycling; upstream's callback switches after steps ``switch_every``,
  ``2 * switch_every``, ..., so the first LoRA runs one step more);
- ``lora-composite``: every step, each LoRA alone gives a classifier-free-guided noise prediction and
  the predictions are averaged;
- ``lora-regional``: a naive per-region LoRA without any constraint: the base model with the global
  prompt outside the boxes; inside each box, the noise prediction of the UNet with that region's
  LoRA merged and the region prompt (averaged where boxes overlap).

All three share one denoising loop (:func:`denoise`), the layer-wise (ED-LoRA) prompt encoding of
:mod:`baselines.sampling`, and merge LoRAs only for the forwards that use them (each LoRA's merged weights
computed once per image, :func:`bench.lora.apply.lora_switcher`), so the shared base pipeline is unchanged
afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from diffusers import StableDiffusionPipeline

from baselines.sampling import encode_pair
from baselines.specs import combination as declared
from baselines.specs.combination import (  # noqa: F401 - the declarations, re-exported where they were
    COMMON,
    COMPOSITE_DEVIATIONS,
    REGIONAL_DEVIATIONS,
    SWITCH_DEVIATIONS,
)
from bench.boxes import Box, box_to_grid
from bench.lora.apply import lora_switcher
from bench.lora.canonical import ConceptLora
from bench.methods import Generation, MethodSpec, check_finite
from bench.pipelines import decode
from bench.prompts import LayerwiseState, install_layerwise
from bench.seeds import initial_noise
from bench.spec import Scene

if TYPE_CHECKING:
    from bench.context import RunContext

def unet_only(lora: ConceptLora) -> ConceptLora:
    """The LoRA's UNet deltas alone (text-encoder deltas and embeddings go through prompt encoding)."""
    return dataclasses.replace(lora, text_encoder={}, token_embeddings={})


def guided(pipe: StableDiffusionPipeline, state: LayerwiseState, embeds: torch.Tensor, latents: torch.Tensor,
           t: torch.Tensor, scheduler: Any, guidance_scale: float) -> torch.Tensor:
    """One CFG noise prediction with layer-wise ``embeds`` ``[2, layers, 77, D]`` (diffusers' formula)."""
    state.embeddings = embeds.to(latents)
    model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    noise = pipe.unet(model_input, t, encoder_hidden_states=state.embeddings[:, 0], return_dict=False)[0]
    uncond, cond = noise.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def denoise(pipe: StableDiffusionPipeline, seed: int, width: int, height: int, steps: int,
            predict: Callable[[LayerwiseState, torch.Tensor, torch.Tensor, Any, int], torch.Tensor]) -> torch.Tensor:
    """The sampling loop of ``StableDiffusionPipeline`` with a pluggable noise prediction; returns latents."""
    unet = pipe.unet
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps, device=unet.device)
    shape = (1, unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    latents = initial_noise(seed, shape, dtype=unet.dtype).to(unet.device) * scheduler.init_noise_sigma
    state = LayerwiseState()
    with install_layerwise(unet, state):
        for i, t in enumerate(scheduler.timesteps):
            noise = predict(state, latents, t, scheduler, i)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
    check_finite(latents, "latents")
    return latents


def active_lora(step: int, switch_every: int, count: int) -> int:
    """Index of the LoRA active at ``step`` (0-based) for LoRA Switch, as upstream schedules it.

    Multi-LoRA-Composition ``callbacks.py`` L6 switches to the next LoRA at the end of step ``i`` when
    ``i > 0 and i % switch_every == 0``, so the first LoRA runs steps ``0 .. switch_every`` (one step
    more than the others) and every later one ``switch_every`` steps.
    """
    if step <= 0:
        return 0
    return ((step - 1) // switch_every) % count


def switch_latents(pipe: StableDiffusionPipeline, prompt: str, negative: str, loras: Sequence[ConceptLora],
                   weight: float, switch_every: int, seed: int, width: int, height: int, steps: int,
                   guidance_scale: float) -> torch.Tensor:
    """LoRA Switch: one LoRA (UNet deltas and text encoder) active per step, scheduled by :func:`active_lora`."""
    if switch_every < 1:
        raise ValueError(f"lora-switch.switch_every: expected an integer >= 1, got {switch_every}")
    embeds = [encode_pair(pipe, prompt, negative, loras, text_lora=lora) for lora in loras]

    with lora_switcher(pipe.unet, None, [unet_only(lora) for lora in loras], [weight] * len(loras)) as use:

        def predict(state: LayerwiseState, latents: torch.Tensor, t: torch.Tensor, scheduler: Any, i: int
                    ) -> torch.Tensor:
            k = active_lora(i, switch_every, len(loras))
            use(k)
            return guided(pipe, state, embeds[k], latents, t, scheduler, guidance_scale)

        return denoise(pipe, seed, width, height, steps, predict)


def composite_latents(pipe: StableDiffusionPipeline, prompt: str, negative: str, loras: Sequence[ConceptLora],
                      weight: float, seed: int, width: int, height: int, steps: int, guidance_scale: float
                      ) -> torch.Tensor:
    """LoRA Composite: every step, the mean over LoRAs of each LoRA's own guided noise prediction."""
    embeds = [encode_pair(pipe, prompt, negative, loras, text_lora=lora) for lora in loras]

    with lora_switcher(pipe.unet, None, [unet_only(lora) for lora in loras], [weight] * len(loras)) as use:

        def predict(state: LayerwiseState, latents: torch.Tensor, t: torch.Tensor, scheduler: Any, i: int
                    ) -> torch.Tensor:
            total = torch.zeros_like(latents)
            for k, embed in enumerate(embeds):
                use(k)
                total += guided(pipe, state, embed, latents, t, scheduler, guidance_scale)
            return total / len(loras)

        return denoise(pipe, seed, width, height, steps, predict)


def regional_latents(pipe: StableDiffusionPipeline, prompt: str, negative: str,
                     regions: Sequence[tuple[Box, str, str, ConceptLora]], weight: float, seed: int, width: int,
                     height: int, steps: int, guidance_scale: float) -> torch.Tensor:
    """Naive per-region LoRA: base + global prompt outside the boxes, each region's LoRA + prompt inside."""
    global_embeds = encode_pair(pipe, prompt, negative, [lora for *_, lora in regions])
    region_embeds = [encode_pair(pipe, p, n, [lora], text_lora=lora) for _, p, n, lora in regions]
    h, w = height // pipe.vae_scale_factor, width // pipe.vae_scale_factor
    masks = torch.zeros(len(regions), 1, 1, h, w)
    for r, (box, *_) in enumerate(regions):
        y0, y1, x0, x1 = box_to_grid(box, h, w)
        masks[r, ..., y0:y1, x0:x1] = 1.0
    count = masks.sum(0)

    loras = [unet_only(lora) for *_, lora in regions]
    with lora_switcher(pipe.unet, None, loras, [weight] * len(loras)) as use:

        def predict(state: LayerwiseState, latents: torch.Tensor, t: torch.Tensor, scheduler: Any, i: int
                    ) -> torch.Tensor:
            use(None)
            noise = guided(pipe, state, global_embeds, latents, t, scheduler, guidance_scale)
            inside = torch.zeros_like(latents)
            for r, (embed, mask) in enumerate(zip(region_embeds, masks, strict=True)):
                if mask.any():
                    use(r)
                    inside += guided(pipe, state, embed, latents, t, scheduler, guidance_scale) * mask.to(latents)
            covered = count.to(latents)
            return torch.where(covered > 0, inside / covered.clamp(min=1), noise)

        return denoise(pipe, seed, width, height, steps, predict)


# ----------------------------------------------------------------------------------------------
# The bench methods


def _scene_loras(scene: Scene, ctx: RunContext) -> tuple[list[str], list[ConceptLora]]:
    ids = list(dict.fromkeys(scene.concept_ids))
    return ids, [ctx.concept_lora(c) for c in ids]


def _prompt(scene: Scene, mode: str) -> str:
    if mode == "global+regions":
        return ", ".join([scene.prompt, *(r.prompt for r in scene.regions)])
    return scene.prompt


class _Combination:
    """Shared parts of the three methods: parameters, pipeline, decoding and the record."""

    name = ""
    deviations: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, Any]):
        if params["prompt"] not in ("global", "global+regions"):
            raise ValueError(f"{self.name}.prompt: expected 'global' or 'global+regions', got {params['prompt']!r}")
        self.params = dict(params)

    def latents(self, pipe: StableDiffusionPipeline, scene: Scene, seed: int, ctx: RunContext
                ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The method's final latents and record entries."""
        raise NotImplementedError

    def generate(self, scene: Scene, seed: int, ctx: RunContext) -> Generation:
        """Make the image of ``scene`` for ``seed`` (the shared pipeline is left as found)."""
        pipe = ctx.base_pipeline(scene.style)
        latents, extra = self.latents(pipe, scene, seed, ctx)
        record = {"scheduler": type(pipe.scheduler).__name__, **extra}
        return Generation(image=decode(pipe, latents), record=record)

    def _common(self, scene: Scene) -> dict[str, Any]:
        p = self.params
        return dict(width=scene.width, height=scene.height, steps=int(p["steps"]),
                    guidance_scale=float(p["guidance_scale"]))


class LoraSwitch(_Combination):
    """``lora-switch``."""

    name = "lora-switch"
    deviations = SWITCH_DEVIATIONS

    def latents(self, pipe: StableDiffusionPipeline, scene: Scene, seed: int, ctx: RunContext
                ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Alternate the active LoRA every ``switch_every`` steps."""
        ids, loras = _scene_loras(scene, ctx)
        every = int(self.params["switch_every"])
        kwargs = {**self._common(scene), "seed": seed}
        latents = switch_latents(pipe, _prompt(scene, self.params["prompt"]), scene.negative_prompt, loras,
                                 float(self.params["lora_weight"]), every, **kwargs)
        schedule = [ids[active_lora(i, every, len(ids))] for i in range(int(self.params["steps"]))]
        return latents, {"concepts": ids, "active_per_step": schedule}


class LoraComposite(_Combination):
    """``lora-composite``."""

    name = "lora-composite"
    deviations = COMPOSITE_DEVIATIONS

    def latents(self, pipe: StableDiffusionPipeline, scene: Scene, seed: int, ctx: RunContext
                ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Average each LoRA's guided prediction every step."""
        ids, loras = _scene_loras(scene, ctx)
        kwargs = {**self._common(scene), "seed": seed}
        latents = composite_latents(pipe, _prompt(scene, self.params["prompt"]), scene.negative_prompt, loras,
                                    float(self.params["lora_weight"]), **kwargs)
        return latents, {"concepts": ids}


class LoraRegional(_Combination):
    """``lora-regional``."""

    name = "lora-regional"
    deviations = REGIONAL_DEVIATIONS

    def latents(self, pipe: StableDiffusionPipeline, scene: Scene, seed: int, ctx: RunContext
                ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Blend region predictions inside the boxes, the global one outside."""
        regions = [(r.box, r.prompt, r.negative_prompt, ctx.concept_lora(r.concept)) for r in scene.regions]
        kwargs = {**self._common(scene), "seed": seed}
        latents = regional_latents(pipe, _prompt(scene, self.params["prompt"]), scene.negative_prompt, regions,
                                   float(self.params["lora_weight"]), **kwargs)
        return latents, {"concepts": list(scene.concept_ids)}


def method_specs() -> list[MethodSpec]:
    """``lora-switch``, ``lora-composite`` and ``lora-regional``, made by the classes here."""
    return declared.method_specs(LoraSwitch, LoraComposite, LoraRegional)
