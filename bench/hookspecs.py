"""Every hook of the bench, in one file. Built-in plugins implement them exactly as third-party ones do.

Third-party plugins register through the ``lcbench`` entry-point group, or are loaded from a local
file with ``bench --plugins path.py``. ``LCBENCH_PLUGINS`` (comma-separated plugin names) limits
which plugins load.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lcbench")
hookimpl = pluggy.HookimplMarker("lcbench")


@hookspec
def bench_methods() -> list:
    """Return a list of :class:`bench.methods.MethodSpec` this plugin provides."""


@hookspec
def bench_metrics() -> list:
    """Return a list of :class:`metrics.api.MetricSpec` this plugin provides."""


@hookspec
def bench_datasets() -> list:
    """Return a list of :class:`bench.catalog.DatasetSource` (named spec files) this plugin provides."""
