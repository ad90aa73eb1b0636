"""The plugin manager: built-in plugins register through the same hooks as third-party ones.

Plugins come from three places: the built-in modules below, installed distributions that declare
the ``lcbench`` entry-point group, and local files given with ``--plugins path.py``. When the
environment variable ``LCBENCH_PLUGINS`` is set (comma-separated plugin names), only those load.

As in datasette, the process has one current manager (:func:`plugin_manager`), made on first use;
the ``bench`` command makes it with its ``--plugins`` files and installs it with :func:`use_plugin_manager`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pluggy

from bench import hookspecs

ENTRY_POINT_GROUP = "lcbench"
ENV_LIMIT = "LCBENCH_PLUGINS"
BUILTIN_PLUGINS = (
    "bench.builtin",
    "composer.plugin",
    "baselines.plugin",
    "metrics.plugin",
    "randomworld.plugin",
    "toyworld.plugin",
    "calibration.plugin",
)
_current: pluggy.PluginManager | None = None


class PluginError(RuntimeError):
    """A plugin cannot be loaded or registers something invalid."""


def _allowed() -> set[str] | None:
    raw = os.environ.get(ENV_LIMIT, "").strip()
    return {name.strip() for name in raw.split(",") if name.strip()} if raw else None


def get_plugin_manager(plugin_files: Sequence[str | Path] = ()) -> pluggy.PluginManager:
    """A plugin manager with the built-in, installed and given local-file plugins registered."""
    pm = pluggy.PluginManager("lcbench")
    pm.add_hookspecs(hookspecs)
    allowed = _allowed()
    for name in BUILTIN_PLUGINS:
        if allowed is None or name in allowed:
            pm.register(importlib.import_module(name), name=name)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (allowed is None or entry.name in allowed) and pm.get_plugin(entry.name) is None:
            pm.register(entry.load(), name=entry.name)
    for file in plugin_files:
        path = Path(file)
        if allowed is not None and path.stem not in allowed:
            continue
        pm.register(_load_file(path), name=path.stem)
    return pm


def plugin_manager() -> pluggy.PluginManager:
    """The process's current plugin manager (built-in and installed plugins unless one was installed)."""
    global _current
    if _current is None:
        _current = get_plugin_manager()
    return _current


def use_plugin_manager(pm: pluggy.PluginManager | None) -> pluggy.PluginManager | None:
    """Make ``pm`` the process's current plugin manager (None: a fresh default one on next use); returns the
    previous one (None if there was none yet), so a caller can put it back."""
    global _current
    previous, _current = _current, pm
    return previous


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise PluginError(f"--plugins: '{path}' does not exist; expected a Python file with @hookimpl functions")
    spec = importlib.util.spec_from_file_location(f"lcbench_local_plugin_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise PluginError(f"--plugins: '{path}' cannot be imported; expected a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _collect(results: Iterable[list | None], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for batch in results:
        for item in batch or []:
            if item.name in found:
                raise PluginError(f"two plugins register the {kind} '{item.name}'; names must be unique")
            found[item.name] = item
    return dict(sorted(found.items()))


def registered_methods(pm: pluggy.PluginManager) -> dict[str, Any]:
    """Every method (:class:`bench.methods.MethodSpec`) the loaded plugins provide, by name."""
    return _collect(pm.hook.bench_methods(), "method")


def registered_metrics(pm: pluggy.PluginManager) -> dict[str, Any]:
    """Every metric the loaded plugins provide, by name."""
    return _collect(pm.hook.bench_metrics(), "metric")


def registered_datasets(pm: pluggy.PluginManager) -> dict[str, Any]:
    """Every named dataset the loaded plugins provide, by name."""
    return _collect(pm.hook.bench_datasets(), "dataset")
