"""``cones2``: declaration (implementation: :mod:`baselines.cones2.method`)."""

from __future__ import annotations

from typing import Any

from baselines.specs import Factory
from bench.methods import MethodSpec

NAME = "cones2"
DATASET_RESIDUALS = "cones2"  # a dataset's trained residuals: <asset root>/cones2/<concept id>.pt
DEFAULTS: dict[str, Any] = {
    "residuals": {},
    "residual_dir": "",
    "missing_residual": "auto",
    "quick_train_steps": 4,
    "quick_train_resolution": 64,
    "steps": 50,
    "guidance_scale": 7.5,
    "guidance_steps": 50,
    "guidance_weight": 0.08,
    "weight_active": 2.5,
    "weight_negative": -1e8,
    "token_matching": "position",
    "self_recurrence": True,
}
DEVIATIONS = (
    "token_matching='position' (default): each box's weight map goes only to its own subject's class-word "
    "tokens, so same-class subjects (two dogs, three men) are separated; upstream ('class_word') gives every "
    "occurrence of the class word every map with that word.",
    "Prompt: the scene's global prompt with concept tokens replaced by class words; a region concept whose tokens "
    "are absent takes the first free occurrence of its class word, else is appended as ', a <class word>'. "
    "Cones2 has no region prompts, negative prompt or adapters "
    "(uncond = '').",
    "Multi-token class words are supported (residual [n, hidden]); upstream crashes for n > 1.",
    "Layout maps: boxes quantised per attention resolution with bench.boxes.box_to_grid instead of a resized "
    "colour image; boxes painted in region order, later boxes own overlaps.",
    "Sampler: first-order LMS (= Euler) computed from the LMS/Euler sigma schedule, as upstream's "
    "scheduler.step(..., order=1); self-recurrence noise is drawn from a generator seeded by the image seed "
    "(upstream: unseeded global RNG).",
    "Residuals must be trained on the same base model (upstream: SD2.1 768-v). Looked up in this order: "
    "residuals={concept: file}, residual_dir/<concept>.pt, the dataset's own <asset root>/cones2/<concept>.pt; "
    "missing_residual='quick' trains a few-step residual for tests only (recorded per concept).",
    "Residual training (train_residual): batch_size 1 by default, as upstream's README command (its script "
    "defaults to --train_batch_size 4); with batch_size > 1 the preservation terms keep upstream's "
    "torch.squeeze slicing, which then indexes the batch instead of the tokens. Not copied: upstream compares "
    "a smaller last batch of an epoch with the first batch's e0 by broadcasting (mismatched slices or a shape "
    "error); here it is compared with e0's first rows.",
)


def method_spec(create: Factory) -> MethodSpec:
    """The registered Cones2 method, made by ``create``."""
    return MethodSpec(
        name=NAME,
        description="Cones2 (re-implemented on diffusers): per-concept residual token embeddings and "
        "layout-guided cross-attention bias with self-recurrent first-order LMS sampling.",
        create=create,
        defaults=DEFAULTS,
        deviations=DEVIATIONS,
    )
