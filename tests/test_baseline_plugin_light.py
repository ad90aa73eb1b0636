"""The baselines plugin is imported by every `bench` command: it must not import the model libraries."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("torch", "diffusers", "transformers", "open_clip")


def test_importing_the_plugin_imports_no_model_library() -> None:
    """Before: baselines.plugin imported every implementation (torch, diffusers, transformers) at load."""
    code = (
        "import sys, baselines.plugin, baselines.cones2.command\n"
        "specs = baselines.plugin.bench_methods()\n"
        "assert len(specs) == 10, [s.name for s in specs]\n"
        "for spec in specs:\n"
        "    spec.availability(spec.defaults)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_declared_methods_create_their_implementations() -> None:
    from baselines.plugin import bench_methods

    specs = {spec.name: spec for spec in bench_methods()}
    method = specs["lora-merge"].create(specs["lora-merge"].defaults)
    assert type(method).__module__ == "baselines.merge"
    cones = specs["cones2"].create(specs["cones2"].defaults)
    assert type(cones).__name__ == "Cones2Method"
