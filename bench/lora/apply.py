"""Applying canonical LoRAs: merging into weights (reversibly) and the low-rank product on activations."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from bench.lora.canonical import ConceptLora, LoraDelta
from bench.lora.formats import check_lora_fits


def _weight_of(model: nn.Module, key: str) -> nn.Parameter:
    """The weight a delta applies to (the base layer's weight if the module is peft-wrapped)."""
    module = model.get_submodule(key)
    return getattr(module, "base_layer", module).weight


def _targets(
    unet: nn.Module | None, text_encoder: nn.Module | None, lora: ConceptLora
) -> Iterator[tuple[nn.Parameter, LoraDelta]]:
    for model, deltas in ((unet, lora.unet), (text_encoder, lora.text_encoder)):
        for key, delta in deltas.items():
            yield _weight_of(model, key), delta  # type: ignore[arg-type]


def _check_loras(name: str, unet: nn.Module | None, text_encoder: nn.Module | None,
                 loras: Sequence[ConceptLora], weights: Sequence[float]) -> None:
    """One weight per LoRA, and every LoRA fits the models (checked before any weight changes)."""
    if len(loras) != len(weights):
        raise ValueError(f"{name}: expected one weight per LoRA ({len(loras)}), got {len(weights)}")
    for lora in loras:
        check_lora_fits(lora, unet, text_encoder, where=f"lora '{lora.source}'")


def _merged(base: torch.Tensor, param: nn.Parameter, delta: LoraDelta, weight: float) -> torch.Tensor:
    """``base + weight * scale * up @ down`` in float32, in ``param``'s dtype and shape."""
    update = delta.weight(torch.float32).to(param.device).reshape(param.shape)
    return (base.to(torch.float32) + float(weight) * update).to(param.dtype)


@torch.no_grad()
def merge_lora_weights(
    unet: nn.Module | None,
    text_encoder: nn.Module | None,
    loras: Sequence[ConceptLora],
    weights: Sequence[float],
) -> None:
    """In place, ``W += weight * scale * up @ down`` for every delta of every LoRA (1x1 convs reshaped).

    All LoRAs are checked against the models first, so a bad file leaves the weights untouched.
    Token embeddings are not touched (see :mod:`bench.prompts`). Pass None for a model to skip it;
    a LoRA with deltas for a skipped model is an error.
    """
    _check_loras("merge_lora_weights", unet, text_encoder, loras, weights)
    for lora, w in zip(loras, weights, strict=True):
        for param, delta in _targets(unet, text_encoder, lora):
            param.copy_(_merged(param, param, delta, w))


@contextmanager
def lora_merged(
    unet: nn.Module | None,
    text_encoder: nn.Module | None,
    loras: Sequence[ConceptLora],
    weights: Sequence[float],
) -> Iterator[None]:
    """Merge the LoRAs for the ``with`` body, then restore the exact original weights.

    Only the touched weights are copied. The originals come back even if the body raises.
    """
    saved: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}
    for lora in loras:
        check_lora_fits(lora, unet, text_encoder, where=f"lora '{lora.source}'")
        for param, _ in _targets(unet, text_encoder, lora):
            saved.setdefault(id(param), (param, param.detach().clone()))
    try:
        merge_lora_weights(unet, text_encoder, loras, weights)
        yield
    finally:
        with torch.no_grad():
            for param, original in saved.values():
                param.copy_(original)


@contextmanager
def lora_switcher(
    unet: nn.Module | None,
    text_encoder: nn.Module | None,
    loras: Sequence[ConceptLora],
    weights: Sequence[float],
) -> Iterator[Callable[[int | None], None]]:
    """A switch between the models with one of ``loras`` merged, for methods that change LoRA every pass.

    Yields ``use``: ``use(k)`` makes the weights those :func:`lora_merged` gives for ``[loras[k]]`` with
    ``weights[k]`` (bit for bit: the same formula on the same originals); ``use(None)`` the originals.
    Each LoRA's merged weights are computed once, on entry, so a switch only repoints the touched
    parameters; they take one copy of the touched weights per LoRA. The originals come back on exit,
    even if the body raises.
    """
    _check_loras("lora_switcher", unet, text_encoder, loras, weights)
    originals: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}
    merged: list[dict[int, torch.Tensor]] = []
    with torch.no_grad():
        for lora, w in zip(loras, weights, strict=True):
            values: dict[int, torch.Tensor] = {}
            for param, delta in _targets(unet, text_encoder, lora):
                original = originals.setdefault(id(param), (param, param.data))[1]
                values[id(param)] = _merged(values.get(id(param), original), param, delta, w)
            merged.append(values)

    def use(k: int | None) -> None:
        chosen = {} if k is None else merged[k]
        for key, (param, original) in originals.items():
            param.data = chosen.get(key, original)

    try:
        yield use
    finally:
        use(None)


def low_rank_delta(x: torch.Tensor, delta: LoraDelta) -> torch.Tensor:
    """``(x @ down.T) @ up.T * scale`` in ``x``'s dtype and device: a LoRA's additive output."""
    down = delta.down.to(device=x.device, dtype=x.dtype)
    up = delta.up.to(device=x.device, dtype=x.dtype)
    return F.linear(F.linear(x, down), up) * delta.scale
