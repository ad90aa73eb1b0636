"""The core's own plugin: the paper dataset, the configured out-of-process methods, and the loaders of
local diffusers models (kinds ``pipeline`` and ``adapter`` of :func:`bench.models.create`)."""

from __future__ import annotations

from typing import Any

from bench.catalog import DatasetSource, paper_dataset
from bench.hookspecs import hookimpl
from bench.methods import MethodSpec
from bench.models import ModelSource
from bench.out_of_process import configured_methods


def _pipeline(ref: str, **options: Any) -> Any:
    from bench.pipelines import load_local_pipeline

    return load_local_pipeline(ref, **options)


def _adapter(ref: str, **options: Any) -> Any:
    from bench.pipelines import load_local_adapter

    return load_local_adapter(ref, **options)


@hookimpl
def bench_datasets() -> list[DatasetSource]:
    """The paper's dataset."""
    return [paper_dataset()]


@hookimpl
def bench_methods() -> list[MethodSpec]:
    """Out-of-process methods declared in the external-methods YAML file."""
    return configured_methods()


@hookimpl
def bench_models() -> list[ModelSource]:
    """Local SD1.x pipelines (diffusers folder or single file) and T2I-Adapter folders."""
    return [
        ModelSource("pipeline", _pipeline, description="a local diffusers folder or an LDM .safetensors/.ckpt"),
        ModelSource("adapter", _adapter, description="a local diffusers T2IAdapter folder"),
    ]
