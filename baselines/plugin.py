"""Built-in baseline methods that run in-process on the base model and concept LoRAs."""

from __future__ import annotations

from baselines import combination, merge
from baselines.mixofshow import method as mixofshow
from bench.hookspecs import hookimpl
from bench.methods import MethodSpec


@hookimpl
def bench_methods() -> list[MethodSpec]:
    """The LoRA-combination baselines (merge, switch, composite, naive regional) and Mix-of-Show."""
    return [merge.method_spec(), *combination.method_specs(), *mixofshow.method_specs()]
