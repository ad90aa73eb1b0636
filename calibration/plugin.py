"""Registers the calibration's reference images as methods (``MethodSpec.reference`` set)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.hookspecs import hookimpl
from bench.methods import Method, MethodSpec

REFERENCES: dict[str, tuple[str, str]] = {
    "ref-oracle": ("oracle", "reference: a perfect image of the scene (the dataset's oracle render, or each concept's "
                   "reference pasted into its box over the base-model floor)"),
    "ref-swapped": ("probe", "reference: the oracle with the first two regions' concepts exchanged"),
    "ref-floor-blank": ("floor", "reference: a blank image in the scene's background colour"),
    "ref-floor-base": ("floor", "reference: the base model on the global prompt with concept tokens replaced by class "
                       "words, no concept LoRA"),
    "ref-noise": ("probe", "reference: uniform noise"),
}
FLOOR_DEFAULTS: dict[str, Any] = {"steps": 50, "guidance_scale": 7.5}


def _create(name: str) -> Any:
    def create(params: Mapping[str, Any]) -> Method:
        from calibration.references import ReferenceImage

        return ReferenceImage(name, params)

    return create


@hookimpl
def bench_methods() -> list[MethodSpec]:
    """The five reference images."""
    return [
        MethodSpec(name=name, description=description, create=_create(name), reference=kind,
                   defaults={} if name == "ref-noise" else dict(FLOOR_DEFAULTS))
        for name, (kind, description) in REFERENCES.items()
    ]
