"""Plugins: built-ins through the same hooks, entry points, local files, the limiting env variable."""

from __future__ import annotations

import importlib.metadata

import pytest

from bench.plugins import (
    BUILTIN_PLUGINS,
    ENTRY_POINT_GROUP,
    PluginError,
    get_plugin_manager,
    registered_datasets,
    registered_methods,
)


def test_builtins_register_through_hooks():
    pm = get_plugin_manager()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(BUILTIN_PLUGINS) <= names
    methods = registered_methods(pm)
    assert "lora-merge" in methods and "lora-composer" in methods
    assert {"random", "paper"} <= set(registered_datasets(pm))


def test_local_plugin_file_adds_a_method(fake_plugin):
    pm = get_plugin_manager([fake_plugin])
    assert "fake-solid" in registered_methods(pm)


def test_env_variable_limits_which_plugins_load(monkeypatch, fake_plugin):
    monkeypatch.setenv("LCBENCH_PLUGINS", "bench.builtin,fake_plugin")
    pm = get_plugin_manager([fake_plugin])
    methods = registered_methods(pm)
    assert "fake-solid" in methods
    assert "lora-merge" not in methods and "lora-composer" not in methods
    assert set(registered_datasets(pm)) == {"paper"}  # the core's own; random and toy are plugins


def test_missing_plugin_file_is_a_clear_error(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        get_plugin_manager([tmp_path / "nope.py"])


def test_entry_point_plugins_load(monkeypatch, fake_plugin):
    """An installed distribution's `lcbench` entry point is registered like a built-in."""
    import sys

    sys.path.insert(0, str(fake_plugin.parent))
    try:
        entry = importlib.metadata.EntryPoint(name="fake-ep", value="fake_plugin", group=ENTRY_POINT_GROUP)
        real = importlib.metadata.entry_points

        def entry_points(**kw):
            if kw.get("group") == ENTRY_POINT_GROUP:
                return importlib.metadata.EntryPoints([entry])
            return real(**kw)

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
        pm = get_plugin_manager()
        assert pm.get_plugin("fake-ep") is not None
        assert "fake-solid" in registered_methods(pm)
    finally:
        sys.path.remove(str(fake_plugin.parent))


def test_table2_default_variants_are_registered_methods():
    from reports import DEFAULT_ABLATION

    assert set(DEFAULT_ABLATION.values()) <= set(registered_methods(get_plugin_manager()))
