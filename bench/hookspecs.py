"""Every hook of the bench, in one file. Built-in plugins implement them exactly as third-party ones do.

Third-party plugins register through the ``lcbench`` entry-point group, or are loaded from a local
file with ``bench --plugins path.py``. ``LCBENCH_PLUGINS`` (comma-separated plugin names) limits
which plugins load. A plugin module is imported by every ``bench`` command, so it should import no
heavy library at module level: factories import what they need when they are called.
"""

from __future__ import annotations

from typing import Any

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


@hookspec
def bench_models() -> list:
    """Return a list of :class:`bench.models.ModelSource`: built-in models (``builtin:NAME``) of a kind,
    or the loader of a kind's local references. :func:`bench.models.create` is their one front door."""


@hookspec
def bench_commands(subparsers: Any) -> None:
    """Add ``bench`` subcommands: ``subparsers`` is the argparse sub-parser action of the ``bench`` command.

    Each added parser sets ``func=callable(args) -> int`` with ``set_defaults``; the exit status is its
    return value, and a ``ValueError``/``RuntimeError``/``OSError`` it raises is printed as one line (exit 2).
    (Datasette's ``publish_subcommand`` is the precedent.)
    """
