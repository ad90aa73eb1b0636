"""The baselines, registered through the bench's hooks: the LoRA combinations, Mix-of-Show, Cones2,
Paint-by-Example and AnyDoor, the Paint-by-Example loader, and the ``cones2-train`` command."""

from __future__ import annotations

from typing import Any

from baselines import anydoor, combination, cones2, merge, paint_by_example
from baselines.mixofshow import method as mixofshow
from bench.hookspecs import hookimpl
from bench.methods import MethodSpec
from bench.models import ModelSource


@hookimpl
def bench_methods() -> list[MethodSpec]:
    """Every baseline method."""
    return [
        *merge.method_specs(),
        *combination.method_specs(),
        *mixofshow.method_specs(),
        paint_by_example.method_spec(),
        anydoor.method_spec(),
        cones2.method_spec(),
    ]


@hookimpl
def bench_models() -> list[ModelSource]:
    """The loader of local Paint-by-Example diffusers folders (kind ``inpainting``)."""
    return [ModelSource("inpainting", paint_by_example.load_pbe,
                        description="a local Fantasy-Studio/Paint-by-Example diffusers folder")]


@hookimpl
def bench_commands(subparsers: Any) -> None:
    """``bench cones2-train``: train a concept's Cones2 residual embedding."""
    from baselines.cones2.command import add_train_command

    add_train_command(subparsers)
