"""Registers LoRA-Composer and its Table 2 ablation variants through the bench's plugin hooks.

Table 2 is one run: ``lora-composer`` (CE+CI+LR), ``lora-composer-ce-ci`` (two components, without LR),
``lora-composer-ce`` (one component, CE) and ``lora-composer-none`` (region-aware injection only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from bench.hookspecs import hookimpl
from bench.methods import Method, MethodSpec
from composer.config import DEVIATIONS, ComposerConfig


def default_params() -> dict[str, Any]:
    """The official defaults, plus the adapters ('auto': see regions.adapters) and the loss level (None: spec or 4)."""
    params: dict[str, Any] = asdict(ComposerConfig())
    params["loss_level"] = None
    params["sketch_adapter"] = "auto"
    params["pose_adapter"] = "auto"
    return params


VARIANTS: dict[str, tuple[str, dict[str, bool]]] = {
    "lora-composer": ("LoRA-Composer: region-aware LoRA injection, concept enhancement (CE), concept "
                      "isolation (CI) and latent re-initialization (LR)", {}),
    "lora-composer-ce-ci": ("LoRA-Composer ablation: CE + CI, without latent re-initialization",
                            {"latent_reinit": False}),
    "lora-composer-ce": ("LoRA-Composer ablation: concept enhancement only",
                         {"concept_isolation": False, "latent_reinit": False}),
    "lora-composer-none": ("LoRA-Composer ablation: region-aware LoRA injection only (no CE, CI, LR)",
                           {"concept_enhancement": False, "concept_isolation": False, "latent_reinit": False}),
}


def _create(params: Mapping[str, Any]) -> Method:
    from composer.method import LoraComposer

    return LoraComposer(params)


@hookimpl
def bench_methods() -> list[MethodSpec]:
    """LoRA-Composer and its ablation variants."""
    specs = []
    for name, (description, overrides) in VARIANTS.items():
        defaults = default_params()
        defaults.update(overrides)
        specs.append(MethodSpec(name=name, description=description, create=_create, defaults=defaults,
                                deviations=DEVIATIONS))
    return specs
