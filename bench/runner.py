"""The runner: plans (method x scene x seed), shards the plan across ranks, writes the run store.

The run folder is self-contained: rank 0 writes the resolved spec and the manifest; every item's
record holds the method's parameters and deviations (written here, once) and what the method
reports it did. A killed run resumes: items whose record exists are skipped. A failed item
(exception, out-of-memory, non-finite output) is recorded and the run goes on.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.assets import AssetResolver, format_missing, missing_assets
from bench.context import RunContext
from bench.methods import Method, MethodSpec, NonFiniteOutput
from bench.models import is_builtin
from bench.resolved import resolved_document
from bench.seeds import scene_seeds
from bench.spec import DatasetSpec
from bench.store import ItemKey, RunStore, StoreError

RECORDED_PACKAGES = ("torch", "diffusers", "transformers", "peft", "open_clip_torch", "safetensors", "lcbench")


class RunError(RuntimeError):
    """The run cannot start as asked; nothing has been generated."""


@dataclass(frozen=True)
class MethodRequest:
    """A method as the user asked for it: its spec and the resolved parameters."""

    spec: MethodSpec
    params: Mapping[str, Any]

    @property
    def key(self) -> str:
        """The method's identity in the store."""
        return self.spec.key(self.params)


@dataclass(frozen=True)
class PlannedItem:
    """One image to make."""

    key: ItemKey
    seed: int


@dataclass
class RunSummary:
    """What a run did."""

    planned: int = 0
    generated: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def shard_from_env() -> tuple[int, int]:
    """(rank, world size) as set by ``accelerate launch`` or ``torchrun``; (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def plan_items(
    spec: DatasetSpec, methods: Sequence[MethodRequest], scene_ids: Sequence[str], seeds: int, scheme: str,
    item_major: bool = False,
) -> list[PlannedItem]:
    """Every (method, scene, seed index) of the run, in a fixed order: method by method, or with
    ``item_major`` scene by scene and seed by seed (every method's image of one item in a row)."""
    items = [
        (m, PlannedItem(ItemKey(method.key, scene_id, index), seed))
        for m, method in enumerate(methods)
        for scene_id in scene_ids
        for index, seed in enumerate(scene_seeds(spec.scenes[scene_id], seeds, scheme))
    ]
    if item_major:
        scene_order = {s: n for n, s in enumerate(scene_ids)}
        items.sort(key=lambda pair: (scene_order[pair[1].key.scene], pair[1].key.index, pair[0]))
    return [item for _, item in items]


def build_manifest(
    spec: DatasetSpec,
    assets: AssetResolver,
    methods: Sequence[MethodRequest],
    scene_ids: Sequence[str],
    seeds: int,
    scheme: str,
    benchmark: str | None,
    spec_hash: str | None = None,
) -> dict[str, Any]:
    """The run's manifest: enough to reproduce it (spec hash, params, versions, git revision).

    ``spec_hash`` overrides the spec's own hash (a run folder's resolved spec stands for the spec it was
    resolved from).
    """
    return {
        "format": "lcbench-run/1",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "name": spec.name,
            "path": str(spec.path),
            "spec_hash": spec_hash or spec.spec_hash(),
            "asset_root": str(assets.root),
        },
        "benchmark": benchmark,
        "scenes": list(scene_ids),
        "seeds": seeds,
        "seed_scheme": scheme,
        "methods": {
            m.key: {
                "name": m.spec.name,
                "params": dict(m.params),
                "description": m.spec.description,
                "deviations": list(m.spec.deviations),
                "reference": m.spec.reference,
            }
            for m in methods
        },
        "packages": _package_versions(),
        "python": platform.python_version(),
        "git_revision": _git_revision(),
    }


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def merge_manifest(existing: Mapping[str, Any], new: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Extend an existing run's manifest with new methods/scenes; a different spec is an error."""
    old_hash, new_hash = existing["dataset"]["spec_hash"], new["dataset"]["spec_hash"]
    if old_hash != new_hash or existing["dataset"]["name"] != new["dataset"]["name"]:
        raise RunError(
            f"{run_dir}: this run folder was made from dataset '{existing['dataset']['name']}' with spec hash "
            f"{old_hash}; the current spec '{new['dataset']['name']}' has hash {new_hash}. Use a new --out."
        )
    if existing.get("seed_scheme") != new["seed_scheme"]:
        raise RunError(f"{run_dir}: seed scheme '{new['seed_scheme']}' differs from the run's "
                       f"'{existing.get('seed_scheme')}'. Use a new --out.")
    merged = dict(existing)
    merged["methods"] = {**existing["methods"], **new["methods"]}
    merged["scenes"] = list(dict.fromkeys([*existing["scenes"], *new["scenes"]]))
    merged["seeds"] = max(int(existing["seeds"]), int(new["seeds"]))
    return merged


def check_available(methods: Sequence[MethodRequest]) -> None:
    """Fail before any image is made when a requested method cannot run here."""
    for method in methods:
        reason = method.spec.unavailable(method.params)
        if reason:
            raise RunError(f"method '{method.spec.name}' is unavailable: {reason}")


def preflight(scene_ids: Sequence[str], ctx: RunContext) -> None:
    """Fail before any image is made when an asset is missing or a LoRA does not fit its base model."""
    spec = ctx.spec
    missing = missing_assets(spec, ctx.assets, scene_ids)
    if missing:
        raise RunError(f"{spec.path}: {len(missing)} asset(s) missing; nothing was generated.\n"
                       + format_missing(missing))
    for concept_id in dict.fromkeys(c for s in scene_ids for c in spec.scene_concepts(spec.scenes[s])):
        ctx.concept_lora(concept_id)  # loads, converts and checks the shapes against the base model


def run_benchmark(
    spec: DatasetSpec,
    assets: AssetResolver,
    methods: Sequence[MethodRequest],
    scene_ids: Sequence[str],
    seeds: int,
    out: Path,
    *,
    scheme: str = "paper",
    benchmark: str | None = None,
    device: str = "cpu",
    retry_failed: bool = False,
    quiet: bool = False,
    shard: tuple[int, int] | None = None,
    spec_hash: str | None = None,
    item_major: bool = False,
) -> RunSummary:
    """Generate every planned item of this process's shard into the run folder ``out``.

    ``spec_hash``: the hash the run folder knows the spec by, when ``spec`` is a run's own resolved spec.
    ``item_major``: make every method's image of one (scene, seed) in a row (see :func:`plan_items`).
    """
    rank, world = shard or shard_from_env()
    if device == "cuda" and world > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    check_available(methods)
    ctx = RunContext(spec, assets, device=device)
    try:
        preflight(scene_ids, ctx)
    except (ValueError, OSError) as err:  # LoraError, AssetError, ModelError name the file and field
        raise RunError(f"{err}\nNothing was generated.") from err
    store = RunStore(out)
    manifest = build_manifest(spec, assets, methods, scene_ids, seeds, scheme, benchmark, spec_hash)
    try:
        lock = store.lock(rank)
    except StoreError as err:
        raise RunError(str(err)) from err
    try:
        if rank == 0:
            if store.manifest_path.is_file():
                manifest = merge_manifest(store.read_manifest(), manifest, out)
            root = assets.root_ref if is_builtin(assets.root_ref) else assets.root
            store.write_spec(resolved_document(spec, root))
            store.write_manifest(manifest)
        if world == 1:  # with several ranks a temporary file may belong to a live writer
            store.clean_temporaries()
        items = plan_items(spec, methods, scene_ids, seeds, scheme, item_major)[rank::world]
        return _generate(store, ctx, methods, items, retry_failed, quiet, rank)
    finally:
        lock.release()


def _generate(
    store: RunStore,
    ctx: RunContext,
    methods: Sequence[MethodRequest],
    items: Sequence[PlannedItem],
    retry_failed: bool,
    quiet: bool,
    rank: int,
) -> RunSummary:
    summary = RunSummary(planned=len(items))
    todo = [it for it in items if not store.is_done(it.key, include_failed=not retry_failed)]
    summary.skipped = len(items) - len(todo)
    by_key = {m.key: m for m in methods}
    instances: dict[str, Method] = {}
    bar = tqdm(todo, desc=f"bench run (rank {rank})", unit="img", disable=quiet, dynamic_ncols=True)
    for item in bar:
        request = by_key[item.key.method]
        scene = ctx.spec.scenes[item.key.scene]
        started = time.perf_counter()
        base = {
            "method_name": request.spec.name,
            "params": dict(request.params),
            "deviations": list(request.spec.deviations),
            "rank": rank,
            "finished": None,
        }
        ctx.begin_item()
        try:
            if item.key.method not in instances:
                instances[item.key.method] = request.spec.create(dict(request.params))
            generation = instances[item.key.method].generate(scene, item.seed, ctx)
            record = dict(base, status="ok", error=None, error_kind=None, models=ctx.models_used(),
                          record=generation.record)
            image = generation.image
        except Exception as err:  # noqa: BLE001 - a failed item is recorded and the run goes on
            kind = _error_kind(err)
            record = dict(base, status="failed", error=f"{type(err).__name__}: {err}", error_kind=kind,
                          traceback=traceback.format_exc(limit=8), record={})
            image = None
            summary.failed += 1
            summary.failures.append(f"{item.key.relative}: {kind}: {err}")
            if kind == "oom" and torch.cuda.is_available():
                torch.cuda.empty_cache()
        record["seconds"] = round(time.perf_counter() - started, 4)
        record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        store.write_item(item.key, item.seed, image, record)
        summary.generated += image is not None
    bar.close()
    return summary


def _error_kind(err: BaseException) -> str:
    if isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower():
        return "oom"
    if isinstance(err, NonFiniteOutput):
        return "nan"
    return "exception"
