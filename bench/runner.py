"""The runner: plans (method x scene x seed), shards the plan across ranks, writes the run store.

The run folder is self-contained: rank 0 writes the resolved spec and the manifest; every item's
record holds the method's parameters and deviations (written here, once) and what the method
reports it did. A killed run resumes: an item is skipped only when it checks out (its record parses and
names it, its image decodes at the scene's size); a broken one is made again. A failed item
(exception, out-of-memory, non-finite output, an image of the wrong size) is recorded and the run goes on.

Several processes (``accelerate launch``, ``torchrun``, ``bench run --workers``: RANK, WORLD_SIZE,
LOCAL_RANK, checked before anything is written) split the plan: rank r of n takes items r, r+n, ... Every
rank checks that the run folder's manifest belongs to its spec and seed scheme (rank > 0 waits a bounded
time for rank 0's); one run-level lock (:meth:`bench.store.RunStore.lock`) lets only the ranks of one launch
write at once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from bench.assets import AssetResolver, format_missing, missing_assets
from bench.context import RunContext
from bench.methods import Method, MethodSpec, NonFiniteOutput
from bench.models import is_builtin
from bench.resolved import resolved_document
from bench.seeds import scene_seeds
from bench.spec import DatasetSpec, quote_value
from bench.store import ItemKey, RunStore, StoreError

RECORDED_PACKAGES = ("torch", "diffusers", "transformers", "peft", "open_clip_torch", "safetensors", "lcbench")
MANIFEST_WAIT_S = 600.0  # how long rank > 0 waits for rank 0 to write (or extend) the manifest
LAUNCH_VARIABLE = "LCBENCH_LAUNCH"  # the launch id of `bench run --workers` (lcbench.workers)
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", LAUNCH_VARIABLE)  # one per launch
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


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
    """What a run did. ``redone``: items found broken on resume and made again (path: what was wrong)."""

    planned: int = 0
    generated: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Shard:
    """This process's part of a launch: rank ``rank`` of ``world``; ``local_rank`` picks its GPU; ``launch``
    identifies the launch (the same for all its ranks) when the launcher says so."""

    rank: int = 0
    world: int = 1
    local_rank: int | None = None
    launch: str | None = None


def _env_int(environ: Mapping[str, str], name: str, low: int, high: int | None, expected: str) -> int | None:
    """An integer environment variable in [low, high] (None when unset); anything else is a RunError."""
    raw = environ.get(name)
    if raw is None:
        return None
    text = raw.strip()
    value = int(text) if _INTEGER.fullmatch(text) else None
    if value is None or value < low or (high is not None and value > high):
        raise RunError(f"environment variable {name}: expected {expected} (got {quote_value(raw)}); "
                       "nothing was written")
    return value


def shard_from_env(environ: Mapping[str, str] | None = None) -> Shard:
    """This process's :class:`Shard` as ``accelerate launch`` or ``torchrun`` set it (RANK, WORLD_SIZE,
    LOCAL_RANK); one process when none is set. A value out of range is a RunError naming the variable."""
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1, None, "an integer >= 1, the number of processes of the launch") or 1
    if world == 1:
        span = "0 (WORLD_SIZE is not set: one process)" if "WORLD_SIZE" not in env else "0 (WORLD_SIZE is 1)"
    else:
        span = f"an integer from 0 to {world - 1} (WORLD_SIZE is {world})"
    rank = _env_int(env, "RANK", 0, world - 1, span)
    if rank is None and world > 1:
        raise RunError(f"environment variable RANK: expected {span} (got nothing: RANK is not set); "
                       "nothing was written")
    local_rank = _env_int(env, "LOCAL_RANK", 0, world - 1, f"an integer from 0 to {world - 1} (WORLD_SIZE is "
                          f"{world}), this process's device on its machine")
    parts = [env.get(name, "") for name in LAUNCH_VARIABLES]
    launch = "/".join(parts) if world > 1 and any(parts) else None
    return Shard(rank or 0, world, local_rank, launch)


def check_shard(shard: tuple[int, int]) -> Shard:
    """A (rank, world) pair given in code, checked as :func:`shard_from_env` checks the variables."""
    rank, world = shard
    return shard_from_env({"RANK": str(rank), "WORLD_SIZE": str(world)})


def plan_items(
    spec: DatasetSpec, methods: Sequence[MethodRequest], scene_ids: Sequence[str], seeds: int, scheme: str,
    item_major: bool = False,
) -> list[PlannedItem]:
    """Every (method, scene, seed index) of the run, in a fixed order: method by method, or with
    ``item_major`` scene by scene and seed by seed (every method's image of one item in a row). A scene a
    method leaves out (:meth:`bench.methods.MethodSpec.skipped_scenes`) gets no item of that method."""
    skipped = [method.spec.skipped_scenes(method.params, spec, scene_ids) for method in methods]
    items = [
        (m, PlannedItem(ItemKey(method.key, scene_id, index), seed))
        for m, method in enumerate(methods)
        for scene_id in scene_ids
        if scene_id not in skipped[m]
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
    unavailable: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The run's manifest: enough to reproduce it (spec hash, params, versions, git revision).

    ``spec_hash`` overrides the spec's own hash (a run folder's resolved spec stands for the spec it was
    resolved from). ``unavailable``: methods asked for (``--methods all``) that cannot run on this dataset,
    with the reason (field ``unavailable_methods``); each method's ``skipped_scenes`` names the scenes it
    leaves out and why. Reports read both to tell a missing column from a missing result.
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
                "skipped_scenes": m.spec.skipped_scenes(m.params, spec, scene_ids),
            }
            for m in methods
        },
        "unavailable_methods": dict(unavailable or {}),
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


def check_same_run(existing: Mapping[str, Any], new: Mapping[str, Any], run_dir: Path) -> None:
    """Refuse a run folder whose manifest was made from another spec (name, hash) or seed scheme."""
    old_hash, new_hash = existing["dataset"]["spec_hash"], new["dataset"]["spec_hash"]
    where = run_dir / "manifest.json"
    if old_hash != new_hash or existing["dataset"]["name"] != new["dataset"]["name"]:
        raise RunError(
            f"{where}: field 'dataset.spec_hash': expected {new_hash}, the spec hash of dataset "
            f"'{new['dataset']['name']}' as it is now (got {quote_value(old_hash, 40)} of dataset "
            f"{quote_value(existing['dataset']['name'], 80)}: the run folder was made from another spec); "
            "use a new --out"
        )
    if existing.get("seed_scheme") != new["seed_scheme"]:
        raise RunError(f"{where}: field 'seed_scheme': expected '{new['seed_scheme']}', this run's seed scheme "
                       f"(got {quote_value(existing.get('seed_scheme'))}); use a new --out")


def covers(existing: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when the manifest ``existing`` already holds every method, scene and seed of ``new``."""
    return (set(new["methods"]) <= set(existing["methods"]) and set(new["scenes"]) <= set(existing["scenes"])
            and int(existing["seeds"]) >= int(new["seeds"]))


def merge_manifest(existing: Mapping[str, Any], new: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Extend an existing run's manifest with new methods/scenes; a different spec is an error."""
    check_same_run(existing, new, run_dir)
    merged = dict(existing)
    merged["methods"] = {**existing["methods"], **new["methods"]}
    merged["scenes"] = list(dict.fromkeys([*existing["scenes"], *new["scenes"]]))
    merged["seeds"] = max(int(existing["seeds"]), int(new["seeds"]))
    for key, entry in new["methods"].items():  # scenes left out before stay left out
        before = existing["methods"].get(key, {}).get("skipped_scenes", {})
        merged["methods"][key] = {**entry, "skipped_scenes": {**before, **entry.get("skipped_scenes", {})}}
    running = {entry["name"] for entry in merged["methods"].values()}
    unavailable = {**existing.get("unavailable_methods", {}), **new.get("unavailable_methods", {})}
    merged["unavailable_methods"] = {name: why for name, why in unavailable.items() if name not in running}
    return merged


def check_available(methods: Sequence[MethodRequest], spec: DatasetSpec | None = None) -> None:
    """Fail before any image is made when a requested method cannot run here (on ``spec``)."""
    for method in methods:
        reason = method.spec.availability(method.params, spec)
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
    manifest_wait: float = MANIFEST_WAIT_S,
    unavailable: Mapping[str, str] | None = None,
) -> RunSummary:
    """Generate every planned item of this process's shard into the run folder ``out``.

    ``shard``: (rank, world size); default: from RANK / WORLD_SIZE (:func:`shard_from_env`).
    ``spec_hash``: the hash the run folder knows the spec by, when ``spec`` is a run's own resolved spec.
    ``item_major``: make every method's image of one (scene, seed) in a row (see :func:`plan_items`).
    ``manifest_wait``: seconds a rank > 0 waits for rank 0's manifest.
    ``unavailable``: methods left out as unavailable on this dataset, with why (recorded in the manifest).
    """
    part = check_shard(shard) if shard is not None else shard_from_env()  # before anything is written
    if device == "cuda" and part.world > 1:
        device = _rank_device(part)
    check_available(methods, spec)
    ctx = RunContext(spec, assets, device=device)
    try:
        preflight(scene_ids, ctx)
    except (ValueError, OSError) as err:  # LoraError, AssetError, ModelError name the file and field
        raise RunError(f"{err}; nothing was generated") from err
    store = RunStore(out)
    manifest = build_manifest(spec, assets, methods, scene_ids, seeds, scheme, benchmark, spec_hash, unavailable)
    plan = plan_items(spec, methods, scene_ids, seeds, scheme, item_major)
    try:
        lock = store.lock(part.rank, part.world, part.launch, _plan_hash(plan) if part.world > 1 else None)
    except StoreError as err:
        raise RunError(str(err)) from err
    try:
        if part.rank == 0:
            if store.manifest_path.is_file():
                manifest = merge_manifest(store.read_manifest(), manifest, out)
        else:
            _await_manifest(store, manifest, part, manifest_wait)
        items = plan[part.rank :: part.world]
        summary = RunSummary(planned=len(items))
        todo = _check_items(store, spec, items, retry_failed, summary, quiet, part.rank)
        if part.rank == 0:
            root = assets.root_ref if is_builtin(assets.root_ref) else assets.root
            store.write_spec(resolved_document(spec, root))
            store.write_manifest(manifest)
        return _generate(store, ctx, methods, todo, quiet, part.rank, summary)
    except StoreError as err:  # a file of the run folder that cannot be read or replaced, named by the store
        raise RunError(f"{err}; nothing was generated") from err
    finally:
        lock.release()


def _plan_hash(plan: Sequence[PlannedItem]) -> str:
    """What a launch makes, in its order: the ranks of one launch share it (the lock compares it)."""
    text = "\n".join(f"{item.key.relative}:{item.seed}" for item in plan)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _rank_device(part: Shard) -> str:
    """``cuda:<LOCAL_RANK>`` (RANK when LOCAL_RANK is not set), checked against this machine's CUDA devices."""
    index = part.local_rank if part.local_rank is not None else part.rank
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count and index >= count:
        name = "LOCAL_RANK" if part.local_rank is not None else "RANK (LOCAL_RANK is not set)"
        raise RunError(f"environment variable {name}: expected an integer from 0 to {count - 1}, a CUDA device of "
                       f"this machine ({count} found), with --device cuda (got '{index}'); nothing was written")
    return f"cuda:{index}"


def _await_manifest(store: RunStore, mine: Mapping[str, Any], part: Shard, wait: float) -> None:
    """Rank > 0: check the run folder's manifest (same spec and seed scheme); wait up to ``wait`` seconds for
    rank 0 to write one that holds this launch's methods, scenes and seeds."""
    deadline = time.monotonic() + wait
    while True:
        if store.manifest_path.is_file():
            existing = store.read_manifest()
            check_same_run(existing, mine, store.root)
            if covers(existing, mine):
                return
        if time.monotonic() >= deadline:
            raise RunError(
                f"{store.manifest_path}: expected rank 0 of this launch (WORLD_SIZE={part.world}) to write the "
                f"manifest of this run within {wait:g} s (rank {part.rank} waited for it; start every rank with "
                "the same options); nothing was generated"
            )
        time.sleep(0.2)


def _check_items(
    store: RunStore,
    spec: DatasetSpec,
    items: Sequence[PlannedItem],
    retry_failed: bool,
    summary: RunSummary,
    quiet: bool,
    rank: int,
) -> list[PlannedItem]:
    """The items still to make: missing, broken (listed in ``summary.redone``) or, with ``retry_failed``,
    failed. Every existing item is checked before anything is made (a file no rewrite can replace raises
    StoreError naming it)."""
    todo: list[PlannedItem] = []
    bar = tqdm(items, desc=f"bench run: checking done items (rank {rank})", unit="item", disable=quiet,
               dynamic_ncols=True, leave=False)
    for item in bar:
        scene = spec.scenes[item.key.scene]
        found = store.check_item(item.key, item.seed, (scene.width, scene.height))
        if found.state == "broken":
            summary.redone.append(str(found.problem))
        if found.state in ("missing", "broken") or (found.state == "failed" and retry_failed):
            todo.append(item)
    bar.close()
    summary.skipped = len(items) - len(todo)
    return todo


def _generate(
    store: RunStore,
    ctx: RunContext,
    methods: Sequence[MethodRequest],
    todo: Sequence[PlannedItem],
    quiet: bool,
    rank: int,
    summary: RunSummary,
) -> RunSummary:
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
            _check_image(generation.image, scene.width, scene.height)
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


def _check_image(image: Any, width: int, height: int) -> None:
    """A method's image must be a PIL image of the scene's size (resume checks the same)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"the method returned a {type(image).__name__}; expected a PIL image")
    if image.size != (width, height):
        raise ValueError(f"the method returned a {image.size[0]}x{image.size[1]} image; expected the scene's size "
                         f"{width}x{height}")


def _error_kind(err: BaseException) -> str:
    if isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower():
        return "oom"
    if isinstance(err, NonFiniteOutput):
        return "nan"
    return "exception"
