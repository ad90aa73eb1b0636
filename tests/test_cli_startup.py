"""``bench --help`` and ``bench list`` import no heavy library: the CLI and every plugin module import lazily.

A behaviour test (which modules are loaded), not a timed test: the start-up time is measured and
reported outside the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.plugins import BUILTIN_PLUGINS

HEAVY = ("torch", "diffusers", "transformers", "open_clip", "peft", "safetensors", "streamlit")
LIGHT_PLUGINS = [*BUILTIN_PLUGINS, "toytrain"]

PROBE = """
import contextlib, io, json, sys
from lcbench.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def _heavy_modules(argv: list[str], plugins: list[str] | None) -> list[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("LCBENCH_PLUGINS", None)
    if plugins is not None:
        env["LCBENCH_PLUGINS"] = ",".join(plugins)
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), *argv], env=env,
                          capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["run", "--help"]])
def test_cli_imports_no_heavy_library(argv: list[str]) -> None:
    assert _heavy_modules(argv, LIGHT_PLUGINS) == []


def test_cli_with_every_builtin_plugin_imports_no_heavy_library() -> None:
    assert _heavy_modules(["--help"], None) == []
