"""The toy world's CLIP: an open_clip model (config ``lcbench_toy_clip.json``) trained on the toy world."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from bench.models import ImageTextModel, ModelError

CLIP_CONFIG = Path(__file__).with_name("lcbench_toy_clip.json")
CLIP_WEIGHTS = Path(__file__).with_name("weights") / "clip.safetensors"
TOY_CLIP = "builtin:toy-clip"


@contextlib.contextmanager
def _root_logger_at(level: int) -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(previous)


def untrained_clip() -> tuple[torch.nn.Module, object]:
    """The toy CLIP's architecture, untrained, with its evaluation transform (open_clip's own)."""
    import open_clip

    open_clip.add_model_config(CLIP_CONFIG)
    # open_clip warns (on the root logger) that no pretrained weights were loaded; the toy CLIP's come next.
    with _root_logger_at(logging.ERROR):
        net, _, preprocess = open_clip.create_model_and_transforms(CLIP_CONFIG.stem, pretrained=None)
    return net, preprocess


def build_toy_clip(weights: str | Path | None = None) -> ImageTextModel:
    """The trained toy CLIP (the committed weights, or another open_clip state dict in safetensors)."""
    import open_clip
    from safetensors.torch import load_file

    state_file = Path(weights) if weights is not None else CLIP_WEIGHTS
    if not state_file.is_file():
        raise ModelError(
            f"CLIP weights '{state_file}' of '{TOY_CLIP}' are missing; expected the output of "
            "`python -m toytrain clip` (an open_clip state dict in safetensors)"
        )
    net, preprocess = untrained_clip()
    net.load_state_dict({k: v.to(torch.float32) for k, v in load_file(str(state_file)).items()})
    digest = hashlib.sha256(state_file.read_bytes()).hexdigest()[:16]
    return ImageTextModel(net, preprocess, open_clip.get_tokenizer(CLIP_CONFIG.stem), TOY_CLIP, f"sha256:{digest}")
