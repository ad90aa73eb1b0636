"""The one front door for models: ``create(ref, kind)``, fed by the ``bench_models`` hook.

A reference is ``builtin:NAME`` (a model a plugin builds: the random-weight world, the trained toy
world) or anything else, which the kind's *loader* reads (a local diffusers folder, a weights file,
an open_clip model name). Plugins declare both through :func:`bench.hookspecs.bench_models`, as
open_clip's factory keeps many models behind ``create_model_and_transforms``.

Kinds and what ``create`` returns for them:

=============  ==========================================================================
``pipeline``   a diffusers ``StableDiffusionPipeline`` (SD1.x family)
``adapter``    a diffusers ``T2IAdapter``
``inpainting``  a diffusers ``PaintByExamplePipeline``
``clip``       :class:`ImageTextModel` (an open_clip model, its transform and tokenizer)
``dino``       :class:`ImageModel` (a transformers ``Dinov2Model`` and its transform)
``box_judge``  an object with the box-judge protocol of ``metrics.api.BoxJudge``
``asset_root`` a :class:`pathlib.Path` holding a dataset's generated assets
``oracle``     a callable ``(scene, concepts) -> PIL image``: a perfect render of a scene
=============  ==========================================================================

Nothing is fetched from the network: a hub id fails with the command that downloads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BUILTIN_PREFIX = "builtin:"
KINDS = ("pipeline", "adapter", "inpainting", "clip", "dino", "box_judge", "asset_root", "oracle")


class ModelError(ValueError):
    """A model cannot be made; the message names the reference, where it came from and what was expected."""


@dataclass(frozen=True)
class ModelSource:
    """One way to make a model of a kind.

    With a ``name`` it is the built-in ``builtin:<name>``: ``build(**options)`` makes it. Without one
    it is the kind's loader of every other reference: ``build(ref, **options)``. ``random_weights``
    marks models whose outputs carry no signal (tests and smoke runs): every table marks their rows.
    """

    kind: str
    build: Callable[..., Any]
    name: str | None = None
    description: str = ""
    random_weights: bool = False


@dataclass(frozen=True)
class ImageTextModel:
    """A CLIP: the open_clip model, its evaluation transform, its tokenizer, and what identifies it."""

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[Any], Any]
    name: str
    weights: str


@dataclass(frozen=True)
class ImageModel:
    """An image encoder (a transformers DINOv2): the model and what identifies it."""

    model: Any
    name: str
    weights: str


def is_builtin(ref: object) -> bool:
    """True for ``builtin:NAME`` references."""
    return isinstance(ref, str) and ref.startswith(BUILTIN_PREFIX)


def builtin_name(ref: str) -> str:
    """``NAME`` of ``builtin:NAME``."""
    return ref[len(BUILTIN_PREFIX) :]


def model_sources(pm: Any = None) -> list[ModelSource]:
    """Every model source the loaded plugins declare (``pm``: default, the process's plugin manager)."""
    if pm is None:
        from bench.plugins import plugin_manager

        pm = plugin_manager()
    return [source for batch in pm.hook.bench_models() for source in batch or []]


def builtins(kind: str, pm: Any = None) -> dict[str, ModelSource]:
    """The built-in models of a kind, by name."""
    return {s.name: s for s in model_sources(pm) if s.kind == kind and s.name is not None}


def source_of(ref: str, kind: str, *, where: str = "", pm: Any = None) -> ModelSource:
    """The source that makes ``ref`` as a ``kind``; an unknown built-in or kind is a ModelError."""
    if kind not in KINDS:
        raise ModelError(f"{where or 'model'}: unknown model kind '{kind}'; expected one of {list(KINDS)}")
    sources = [s for s in model_sources(pm) if s.kind == kind]
    if is_builtin(ref):
        named = {s.name: s for s in sources if s.name is not None}
        if builtin_name(ref) not in named:
            known = [BUILTIN_PREFIX + n for n in sorted(named)]
            raise ModelError(f"{where or 'model'}: unknown built-in {kind} '{ref}'; expected one of {known}")
        return named[builtin_name(ref)]
    loaders = [s for s in sources if s.name is None]
    if not loaders:
        raise ModelError(f"{where or 'model'}: no plugin loads a {kind} from '{ref}'; expected a built-in "
                         f"{[BUILTIN_PREFIX + s.name for s in sources if s.name]}")
    return loaders[-1]


def create(ref: str, kind: str, *, where: str = "", pm: Any = None, **options: Any) -> Any:
    """Make the model ``ref`` of ``kind`` (see the module docstring); ``where`` names the field it came from."""
    source = source_of(ref, kind, where=where, pm=pm)
    if source.name is not None:
        return source.build(**options)
    return source.build(ref, where=where or kind, **options)


def random_weights(ref: str, kind: str, pm: Any = None) -> bool:
    """True when ``ref`` is a built-in whose weights are random (its outputs carry no signal)."""
    if not is_builtin(ref):
        return False
    try:
        return source_of(ref, kind, pm=pm).random_weights
    except ModelError:
        return False


def looks_like_hub_id(ref: str) -> bool:
    """True for ``org/name`` references, which the bench never fetches."""
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))
