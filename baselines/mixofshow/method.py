"""Mix-of-Show as bench methods: ``mix-of-show`` (boxes only) and ``mix-of-show-adapter`` (Mix-of-Show*).

Per image: fuse (once per concept set and base model, cached on disk), write the fused weights into
the shared pipeline for the call, encode the context and region prompts, sample with the region
rewrite, restore the base weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from diffusers import StableDiffusionPipeline

from baselines.mixofshow.cache import cached_fusion
from baselines.mixofshow.fusion import FusedModel, FusionConcept, FusionConfig, weights_applied
from baselines.mixofshow.sampling import RegionPrompt, prepare_fused_layout, regional_sample
from bench.methods import Generation, MethodSpec, check_finite
from bench.pipelines import decode
from bench.seeds import initial_noise
from bench.spec import Scene
from regions.adapters import SceneAdapters, adapter_refs, no_adapter_note

if TYPE_CHECKING:
    from bench.context import RunContext

DEFAULTS: dict[str, Any] = {
    "steps": 50,
    "guidance_scale": 7.5,
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
    "research branch (the paper's setting): DDIM activation sampling with all steps recorded, fp32 fusion, "
    "the base model's own scheduler for regional sampling",
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


class MixOfShow:
    """Gradient-fused ED-LoRAs sampled with region prompts (and optionally T2I-Adapter conditions)."""

    def __init__(self, params: Mapping[str, Any]):
        if params["fuse"] not in ("style", "scene"):
            raise ValueError(f"mix-of-show.fuse: expected 'style' or 'scene', got {params['fuse']!r}")
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
        with weights_applied(pipe.unet, pipe.text_encoder, fused.unet, fused.text_encoder):
            layout = prepare_fused_layout(pipe, fused.tokens_concept(), scene.prompt, scene.negative_prompt,
                                          regions, features)
            latents = regional_sample(pipe, layout, initial_noise(seed, shape), int(self.params["steps"]),
                                      float(self.params["guidance_scale"]))
        check_finite(latents, "mix-of-show latents")
        record = {
            "branch": "research",
            "fused_concepts": list(self.fused_concepts(scene, ctx)),
            "fusion_key": key,
            "fusion_config": dataclasses.asdict(self.fusion_config(pipe)),
            "fusion_cache_hit": hit,
            "fusion_objective": fused.fit_summary(),
            "scheduler": type(pipe.scheduler).__name__,
            "adapters": refs,
            "adapter_note": no_adapter_note(scene) if self.params["image_conditions"] else None,
        }
        return Generation(image=decode(pipe, latents), record=record)


def method_specs() -> Sequence[MethodSpec]:
    """``mix-of-show`` and ``mix-of-show-adapter`` (Mix-of-Show*, with T2I-Adapter conditions)."""
    with_conditions = {**DEFAULTS, "image_conditions": True}
    return [
        MethodSpec(name="mix-of-show", create=MixOfShow, defaults=DEFAULTS, deviations=DEVIATIONS,
                   description="Mix-of-Show (research branch): gradient fusion of the ED-LoRAs, regionally "
                               "controllable sampling with region prompts and boxes"),
        MethodSpec(name="mix-of-show-adapter", create=MixOfShow, defaults=with_conditions, deviations=DEVIATIONS,
                   description="Mix-of-Show*: as mix-of-show, plus T2I-Adapter sketch/keypose conditions with "
                               "per-region weights (scenes without image guidance: exactly mix-of-show)"),
    ]
