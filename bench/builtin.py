"""The harness's own plugin: the shipped datasets and the configured external methods."""

from __future__ import annotations

from bench.catalog import DatasetSource, builtin_datasets
from bench.external import configured_external_methods
from bench.hookspecs import hookimpl
from bench.methods import MethodSpec


@hookimpl
def bench_datasets() -> list[DatasetSource]:
    """The datasets in the repository's datasets/ folder."""
    return builtin_datasets()


@hookimpl
def bench_methods() -> list[MethodSpec]:
    """Out-of-process methods declared in the external-methods YAML file."""
    return configured_external_methods()
