"""Built-in plugin for the baselines from other code bases: Paint-by-Example, AnyDoor and Cones2."""

from __future__ import annotations

from baselines import anydoor, cones2, paint_by_example
from bench.hookspecs import hookimpl
from bench.methods import MethodSpec


@hookimpl
def bench_methods() -> list[MethodSpec]:
    """Paint-by-Example (diffusers), AnyDoor (out of process) and Cones2 (re-implemented)."""
    return [paint_by_example.method_spec(), anydoor.method_spec(), cones2.method_spec()]
