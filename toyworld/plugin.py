"""Registers the trained toy world: its models through ``bench_models`` and its dataset through ``bench_datasets``.

The toy world's trainers and quality gates are developer tools (``toytrain``); the bench needs only
this runtime: the model configs, the committed weights, the toy CLIP and the per-box classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.catalog import REPO_DATASETS, DatasetSource
from bench.hookspecs import hookimpl
from bench.models import ModelError, ModelSource


def _pipeline(**_: Any) -> Any:
    from toyworld.models import load_toy_pipeline

    return load_toy_pipeline()


def _clip(weights: str | Path | None = None, **_: Any) -> Any:
    from toyworld.clip import build_toy_clip

    return build_toy_clip(weights)


def _oracle(**_: Any) -> Any:
    from toyworld.oracle import ToyOracle

    return ToyOracle()


def _judge(**_: Any) -> Any:
    from toyworld.classifier import toy_box_judge

    return toy_box_judge()


def _judge_file(ref: str, *, where: str, **_: Any) -> Any:
    from toyworld.classifier import toy_box_judge

    path = Path(ref)
    if path.suffix != ".safetensors" or not path.is_file():
        raise ModelError(f"{where}: expected 'builtin:toy-classifier' or an existing .safetensors file of the toy "
                         f"classifier's weights (got {ref!r})")
    return toy_box_judge(path, ref)


@hookimpl
def bench_models() -> list[ModelSource]:
    """The toy SD pipeline, the toy CLIP, the per-box classifier (built-in or a weights file), the oracle."""
    return [
        ModelSource("pipeline", _pipeline, "toy-sd", "SD1.x-layout VAE/UNet/text encoder trained on the toy world"),
        ModelSource("clip", _clip, "toy-clip", "open_clip CLIP trained on the toy world"),
        ModelSource("box_judge", _judge, "toy-classifier", "per-box shape/colour/texture classifier of the toy world"),
        ModelSource("box_judge", _judge_file, description="a .safetensors file of toy BoxClassifier weights"),
        ModelSource("oracle", _oracle, "toy-render", "the toy world's own render of a scene (calibration oracle)"),
    ]


@hookimpl
def bench_datasets() -> list[DatasetSource]:
    """The toy benchmark."""
    return [DatasetSource("toy", REPO_DATASETS / "toy.yaml",
                          "trained toy world: coloured shapes, 4 concept ED-LoRAs, toy CLIP and box classifier")]
