"""``bench calibrate RUN``: make the calibration's reference images for every scene and seed of a run.

The references (:mod:`calibration`) are made into the run folder by the runner, like any method, with
the run's own resolved spec, asset root, scenes, seeds and seed scheme; ``bench score`` calls this first,
so every scored run has its oracle, floors and probes beside the methods. Resumable like any run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.assets import AssetResolver
from bench.plugins import plugin_manager, registered_methods
from bench.runner import MethodRequest, RunSummary, run_benchmark
from bench.store import RunStore

FLOOR = "ref-floor-base"


def calibrate(run_dir: str | Path, *, device: str = "cpu", quiet: bool = False,
              params: Mapping[str, Mapping[str, Any]] | None = None) -> RunSummary:
    """Make the missing reference images of the run's scenes and seeds; return what the runner did.

    ``params`` overrides a reference's parameters by name (e.g. ``{"ref-floor-base": {"steps": 20}}``).
    """
    store = RunStore(run_dir)
    manifest = store.read_manifest()
    spec = store.read_spec()
    dataset = manifest.get("dataset") or {}
    scenes = [s for s in manifest.get("scenes", []) if s in spec.scenes]
    styles = sorted({spec.scenes[s].style for s in scenes} - set(spec.base_models))
    if styles:
        if not quiet:
            print(f"{store.root}: calibration skipped: {spec.path}: field 'base_models' has no base model for "
                  f"style(s) {styles}, which the floor references sample")
        return RunSummary()
    references = sorted(
        (MethodRequest(spec_, spec_.resolve_params((params or {}).get(spec_.name, {})))
         for spec_ in registered_methods(plugin_manager()).values() if spec_.reference is not None),
        key=lambda request: request.spec.name != FLOOR,  # the floor first: the other references reuse it
    )
    return run_benchmark(
        spec, AssetResolver(spec, dataset.get("asset_root")), references, scenes, int(manifest.get("seeds", 1)),
        store.root, scheme=manifest.get("seed_scheme", "paper"), benchmark=manifest.get("benchmark"), device=device,
        quiet=quiet, spec_hash=dataset.get("spec_hash"), item_major=True,
    )
