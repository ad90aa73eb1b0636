"""Mix-of-Show as bench methods: ``mix-of-show`` (boxes only) and ``mix-of-show-adapter`` (Mix-of-Show*).

Per image: fuse (once per concept set and base model, cached on disk), write the fused weights into
the shared pipeline for the call, encode the context and region prompts, sample with the region
rewrite, restore the base weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, StableDiffusionPipeline

from baselines.mixofshow.cache import cached_fusion
from baselines.mixofshow.fusion import FusedModel, FusionConcept, FusionConfig, weights_applied
from baselines.mixofshow.sampling import RegionPrompt, prepare_fused_layout, regional_sample
from baselines.specs import mixofshow as declared
from baselines.specs.mixofshow import DEFAULTS, DEVIATIONS, SCHEDULERS  # noqa: F401 - re-exported
from bench.methods import Generation, MethodSpec, check_finite
from bench.pipelines import decode, shipped_scheduler
from bench.seeds import initial_noise
from bench.spec import Scene
from regions.adapters import SceneAdapters, adapter_refs, no_adapter_note

if TYPE_CHECKING:
    from bench.context import RunContext


def sampling_scheduler(pipe: StableDiffusionPipeline, choice: str) -> tuple[Any, dict[str, Any]]:
    """The regional sampler's scheduler for the parameter ``scheduler`` and what to record about it.

    ``'model'``: the scheduler the base model ships (:func:`bench.pipelines.shipped_scheduler`), as the
    research branch samples with the model folder's scheduler (PNDM/PLMS for ChilloutMix); the others are
    made from the shipped scheduler's betas: ``'dpm-solver++'`` (main branch), ``'ddim'``, ``'pndm'``
    (with ``skip_prk_steps``, i.e. PLMS, as SD's own scheduler config).
    """
    shipped = shipped_scheduler(pipe)
    if choice == "model":
        scheduler = shipped
    elif choice == "dpm-solver++":
        scheduler = DPMSolverMultistepScheduler.from_config(shipped.config, algorithm_type="dpmsolver++")
    elif choice == "ddim":
        scheduler = DDIMScheduler.from_config(shipped.config)
    elif choice == "pndm":
        scheduler = PNDMScheduler.from_config(shipped.config, skip_prk_steps=True)
    else:
        raise ValueError(f"mix-of-show parameter 'scheduler': expected one of {list(SCHEDULERS)}, got {choice!r}")
    config = {k: v for k, v in scheduler.config.items() if not k.startswith("_")}
    return scheduler, {"name": type(scheduler).__name__, "choice": choice,
                       "shipped": type(shipped).__name__, "config": config}


class MixOfShow:
    """Gradient-fused ED-LoRAs sampled with region prompts (and optionally T2I-Adapter conditions)."""

    def __init__(self, params: Mapping[str, Any]):
        if params["fuse"] not in ("style", "scene"):
            raise ValueError(f"mix-of-show.fuse: expected 'style' or 'scene', got {params['fuse']!r}")
        if params["scheduler"] not in SCHEDULERS:
            raise ValueError(f"mix-of-show parameter 'scheduler': expected one of {list(SCHEDULERS)}, "
                             f"got {params['scheduler']!r}")
        self.params = dict(params)
        self._fused: dict[tuple[str, tuple[str, ...]], tuple[FusedModel, str, bool]] = {}
        self.adapters = SceneAdapters("mix-of-show-adapter")

    def fusion_config(self, pipe: StableDiffusionPipeline) -> FusionConfig:
        """Fusion settings from the parameters (``spatial_size`` 'native': the UNet's own resolution)."""
        p = self.params
        size = p["spatial_size"]
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor if size == "native" else int(size)
        return FusionConfig(text_iters=int(p["text_iters"]), unet_iters=int(p["unet_iters"]),
                            text_alpha=float(p["text_alpha"]), unet_alpha=float(p["unet_alpha"]),
                            spatial_steps=int(p["spatial_steps"]), spatial_height=size,
                            spatial_width=size, spatial_seed=int(p["fusion_seed"]))

    def fused_concepts(self, scene: Scene, ctx: RunContext) -> list[str]:
        """Ids of the concepts fused for ``scene``, in spec order."""
        if self.params["fuse"] == "style":
            return [cid for cid, c in ctx.spec.concepts.items() if c.style == scene.style]
        return ctx.spec.scene_concepts(scene)

    def fused_model(self, scene: Scene, ctx: RunContext, pipe: StableDiffusionPipeline
                    ) -> tuple[FusedModel, str, bool]:
        """The fused model for the scene's concept set (memory, then disk cache, then fusion)."""
        ids = tuple(self.fused_concepts(scene, ctx))
        if (scene.style, ids) not in self._fused:
            concepts = [FusionConcept(ctx.concept_lora(cid), ctx.concept(cid).token_list) for cid in ids]
            self._fused[(scene.style, ids)] = cached_fusion(pipe, concepts, self.fusion_config(pipe))
            return self._fused[(scene.style, ids)]
        fused, key, _ = self._fused[(scene.style, ids)]
        return fused, key, True

    def generate(self, scene: Scene, seed: int, ctx: RunContext) -> Generation:
        """Make the image of ``scene`` for ``seed``; the shared pipeline gets its base weights back.

        With adapters on, a scene without image guidance is sampled exactly as by ``mix-of-show``.
        """
        refs: dict[str, str] = {}
        if self.params["image_conditions"]:
            refs = adapter_refs(scene, self.params, ctx.assets.base_model_ref(scene.style), "mix-of-show-adapter")
        pipe = ctx.base_pipeline(scene.style)
        fused, key, hit = self.fused_model(scene, ctx, pipe)
        regions = [RegionPrompt(r.box, r.prompt, r.negative_prompt) for r in scene.regions]
        features = self.adapters.features(scene, refs, ctx.assets.condition_image, pipe.unet.device, pipe.unet.dtype)
        shape = (1, pipe.unet.config.in_channels, scene.height // pipe.vae_scale_factor,
                 scene.width // pipe.vae_scale_factor)
        scheduler, scheduler_record = sampling_scheduler(pipe, self.params["scheduler"])
        with weights_applied(pipe.unet, pipe.text_encoder, fused.unet, fused.text_encoder):
            layout = prepare_fused_layout(pipe, fused.tokens_concept(), scene.prompt, scene.negative_prompt,
                                          regions, features)
            latents = regional_sample(pipe, layout, initial_noise(seed, shape), int(self.params["steps"]),
                                      float(self.params["guidance_scale"]), scheduler=scheduler)
        check_finite(latents, "mix-of-show latents")
        record = {
            "branch": "research",
            "fused_concepts": list(self.fused_concepts(scene, ctx)),
            "fusion_key": key,
            "fusion_config": dataclasses.asdict(self.fusion_config(pipe)),
            "fusion_cache_hit": hit,
            "fusion_objective": fused.fit_summary(),
            "scheduler": scheduler_record["name"],
            "sampler": scheduler_record,
            "adapters": refs,
            "adapter_note": no_adapter_note(scene) if self.params["image_conditions"] else None,
        }
        return Generation(image=decode(pipe, latents), record=record)


def method_specs() -> Sequence[MethodSpec]:
    """``mix-of-show`` and ``mix-of-show-adapter``, made by :class:`MixOfShow`."""
    return declared.method_specs(MixOfShow)
