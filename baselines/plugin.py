"""The baselines, registered through the bench's hooks: the LoRA combinations, Mix-of-Show, Cones2,
Paint-by-Example and AnyDoor, the Paint-by-Example loader, and the ``cones2-train`` command.

Every ``bench`` command imports this module, so it imports only the declarations in
:mod:`baselines.specs` (no torch, diffusers, transformers or open_clip). The factories below import a
method's implementation when the method is created, the loader's when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baselines.specs import anydoor, combination, cones2, merge, mixofshow, paint_by_example
from bench.hookspecs import hookimpl
from bench.methods import Method, MethodSpec
from bench.models import ModelSource

Params = Mapping[str, Any]


def _lora_merge(params: Params) -> Method:
    from baselines.merge import LoraMerge

    return LoraMerge(params)


def _composlora_merge(params: Params) -> Method:
    from baselines.merge import ComposLoraMerge

    return ComposLoraMerge(params)


def _lora_switch(params: Params) -> Method:
    from baselines.combination import LoraSwitch

    return LoraSwitch(params)


def _lora_composite(params: Params) -> Method:
    from baselines.combination import LoraComposite

    return LoraComposite(params)


def _lora_regional(params: Params) -> Method:
    from baselines.combination import LoraRegional

    return LoraRegional(params)


def _mix_of_show(params: Params) -> Method:
    from baselines.mixofshow.method import MixOfShow

    return MixOfShow(params)


def _paint_by_example(params: Params) -> Method:
    from baselines.paint_by_example import PaintByExampleMethod

    return PaintByExampleMethod(params)


def _anydoor(params: Params) -> Method:
    from baselines.anydoor import AnyDoorMethod

    return AnyDoorMethod(params)


def _cones2(params: Params) -> Method:
    from baselines.cones2.method import Cones2Method

    return Cones2Method(params)


def load_inpainting(ref: str, *, where: str = "", **options: Any) -> Any:
    """The ``inpainting`` loader: a local Paint-by-Example diffusers folder (``paint_by_example.load_pbe``)."""
    from baselines.paint_by_example import load_pbe

    return load_pbe(ref, where=where, **options)


@hookimpl
def bench_methods() -> list[MethodSpec]:
    """Every baseline method."""
    return [
        merge.method_spec(_lora_merge),
        merge.composlora_method_spec(_composlora_merge),
        *combination.method_specs(_lora_switch, _lora_composite, _lora_regional),
        *mixofshow.method_specs(_mix_of_show),
        paint_by_example.method_spec(_paint_by_example),
        anydoor.method_spec(_anydoor),
        cones2.method_spec(_cones2),
    ]


@hookimpl
def bench_models() -> list[ModelSource]:
    """The loader of local Paint-by-Example diffusers folders (kind ``inpainting``)."""
    return [ModelSource("inpainting", load_inpainting, description="a local Fantasy-Studio/Paint-by-Example "
                        "diffusers folder")]


@hookimpl
def bench_commands(subparsers: Any) -> None:
    """``bench cones2-train``: train a concept's Cones2 residual embedding."""
    from baselines.cones2.command import add_train_command

    add_train_command(subparsers)
