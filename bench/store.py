"""The run store: one folder per run, one PNG and one JSON record per (method, scene, seed).

Layout::

    RUN/manifest.json                                   spec hash, methods and params, versions, git revision
    RUN/spec.json                                       the resolved spec the run used (bench.resolved)
    RUN/items/<method_key>/<scene_id>/<index>.png       the image (absent for a failed item)
    RUN/items/<method_key>/<scene_id>/<index>.json      its record; written last, so it marks the item done
    RUN/scores/<metric key>/conventions.json            how a metric's scores were made (ScoreStore)
    RUN/scores/<metric key>/items/<method>/<scene>/<index>.json   one image's score rows
    RUN/scores/.refcache/                               reference embeddings by file hash

    RUN/.lock, RUN/.lock.rank<r>, RUN/.lock.json           the run-level lock (see :meth:`RunStore.lock`)

Every file is written to a temporary name and renamed into place, so a killed run leaves no
half-written file. A rerun checks each item before it skips it (:meth:`RunStore.check_item`: the record
parses and names the item, the image decodes at the scene's size) and redoes a broken one. Every file of
the folder that cannot be read raises one :class:`StoreError` naming it (and the line or field).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from PIL import Image

from bench.safeload import error_text
from bench.spec import SEED_SCHEMES, DatasetSpec, load_spec, quote_value

MANIFEST = "manifest.json"
SPEC = "spec.json"
ITEMS = "items"
SCORES = "scores"
CONVENTIONS = "conventions.json"
MANIFEST_FORMAT = "lcbench-run/1"
LOCK = ".lock"  # held for a moment while a writer joins: makes joining one step
LOCK_RECORD = ".lock.json"  # the launch now writing: its world size (and launch id)
LOCK_WAIT_S = 60.0  # how long a writer waits for another one to finish joining
ITEM_STATUSES = ("ok", "failed")
REDO_HINT = "rerun the `bench run` that made this folder: it checks every item and redoes broken ones"


class StoreError(RuntimeError):
    """The run folder cannot be used as asked (locked, made from another spec, or a file in it is unreadable)."""


@dataclass(frozen=True)
class ItemKey:
    """One planned image: a method (by its store key), a scene and a seed index."""

    method: str
    scene: str
    index: int

    @property
    def relative(self) -> str:
        """The item's path inside the run folder, without suffix."""
        return f"{ITEMS}/{self.method}/{self.scene}/{self.index:03d}"


@dataclass(frozen=True)
class ItemRecord:
    """A finished item as read back from the store."""

    key: ItemKey
    seed: int
    status: str
    image: Path | None
    data: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True when the item produced an image."""
        return self.status == "ok"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True, default=str).encode("utf-8"))


def read_json(path: Path, expected: str) -> Any:
    """The JSON value in ``path``; unreadable bytes raise one :class:`StoreError` naming the file and line.

    ``expected`` says what the file should hold (e.g. "the manifest `bench run` writes"). A missing file
    raises FileNotFoundError, for the caller to word.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:  # a folder, no permission, ...
        raise StoreError(f"{path}: expected {expected}, a readable file ({type(err).__name__}: "
                         f"{err.strerror or err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise StoreError(f"{path}: line {line}, column {column}: expected {expected}, UTF-8 JSON text "
                         f"({err.reason}) (got {quote_value(raw[err.start : err.start + 1])})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise StoreError(f"{path}: line {err.lineno}, column {err.colno}: expected {expected}, well-formed JSON "
                         f"({err.msg})") from err
    except RecursionError as err:
        raise StoreError(f"{path}: expected {expected}, JSON nested a few levels deep (it nests too deeply)") from err


def _field_error(path: Path, where: str, expected: str, got: Any = ...) -> StoreError:
    got_text = "" if got is ... else f" (got {quote_value(got)})"
    return StoreError(f"{path}: field '{where}': expected {expected}{got_text}")


def _need(path: Path, mapping: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...],
          expected: str) -> Any:
    """``mapping[key]`` when it is of ``kind`` (never a bool for int), else a StoreError naming the field."""
    if key not in mapping:
        raise _field_error(path, where, f"{expected} (required field is missing)")
    value = mapping[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _field_error(path, where, expected, value)
    return value


def validate_manifest(path: Path, data: Any) -> dict[str, Any]:
    """Check the fields of a run manifest that the bench relies on; return it unchanged.

    ``format`` and ``seed_scheme`` may be absent (hand-made manifests of tests and older tools); when present
    they are checked like the rest.
    """
    if not isinstance(data, dict):
        raise _field_error(path, "<top>", "a JSON object (the manifest `bench run` writes)", type(data).__name__)
    if "format" in data and data["format"] != MANIFEST_FORMAT:
        raise _field_error(path, "format", f"'{MANIFEST_FORMAT}'", data["format"])
    dataset = _need(path, data, "dataset", "dataset", dict, "a JSON object")
    for key in ("name", "spec_hash"):
        _need(path, dataset, key, f"dataset.{key}", str, "a string")
    if "asset_root" in dataset and not isinstance(dataset["asset_root"], str | None):
        raise _field_error(path, "dataset.asset_root", "a folder path or null", dataset["asset_root"])
    scenes = _need(path, data, "scenes", "scenes", list, "a list of scene ids")
    for n, scene in enumerate(scenes):
        if not isinstance(scene, str):
            raise _field_error(path, f"scenes[{n}]", "a scene id (a string)", scene)
    if _need(path, data, "seeds", "seeds", int, "an integer >= 1") < 1:
        raise _field_error(path, "seeds", "an integer >= 1", data["seeds"])
    if "seed_scheme" in data and data["seed_scheme"] not in SEED_SCHEMES:
        raise _field_error(path, "seed_scheme", f"one of {list(SEED_SCHEMES)}", data["seed_scheme"])
    if data.get("benchmark") is not None and not isinstance(data["benchmark"], str):
        raise _field_error(path, "benchmark", "a benchmark id or null", data["benchmark"])
    methods = _need(path, data, "methods", "methods", dict, "a JSON object of method key -> method")
    for key, method in methods.items():
        if not isinstance(method, dict):
            raise _field_error(path, f"methods.{key}", "a JSON object", type(method).__name__)
        _need(path, method, "name", f"methods.{key}.name", str, "a method name")
        _need(path, method, "params", f"methods.{key}.params", dict, "a JSON object of parameters")
    return data


def load_item_image(path: Path, record_path: Path | None = None) -> Image.Image:
    """An item's image decoded as RGB; a missing or broken file raises one StoreError naming it."""
    of = f" of the item recorded in {record_path.name}" if record_path is not None else ""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... on a broken file
        raise StoreError(f"{path}: expected the PNG image{of}, a file that decodes ({error_text(err)}); "
                         f"{REDO_HINT}") from err


@dataclass(frozen=True)
class ItemCheck:
    """What :meth:`RunStore.check_item` found: ``missing``, ``ok``, ``failed`` (recorded as failed) or
    ``broken`` (``problem`` names the file and what is wrong: the item is to be made again)."""

    state: str
    problem: str | None = None


@dataclass
class RunLock:
    """This process's hold on a run folder: its rank's lock, taken as one rank of a launch of ``world``."""

    root: Path
    rank: int
    world: int
    lock: FileLock
    cleaned: int = 0  # temporary files removed (only when no other writer was live)
    released: bool = field(default=False)

    def release(self) -> None:
        """Let go of the rank's lock (the kernel lets go too when the process dies)."""
        if not self.released:
            self.lock.release()
            self.released = True


class RunStore:
    """Reads and writes one run folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- manifest ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        """Where the manifest lives."""
        return self.root / MANIFEST

    def read_manifest(self) -> dict[str, Any]:
        """The run's manifest, checked (:func:`validate_manifest`); raises StoreError naming the file and
        field when the folder is not a run or the manifest is unreadable."""
        try:
            data = read_json(self.manifest_path, "the manifest `bench run` writes")
        except FileNotFoundError as err:
            raise StoreError(f"{self.root}: not a run folder (no {MANIFEST})") from err
        return validate_manifest(self.manifest_path, data)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest atomically."""
        atomic_write_json(self.manifest_path, manifest)

    # -- spec -------------------------------------------------------------------------------
    @property
    def spec_path(self) -> Path:
        """Where the resolved spec lives."""
        return self.root / SPEC

    def write_spec(self, document: dict[str, Any]) -> None:
        """Write the resolved spec (:func:`bench.resolved.resolved_document`) atomically."""
        atomic_write_json(self.spec_path, document)

    def read_spec(self) -> DatasetSpec:
        """The spec the run was made with (validated as any spec file is)."""
        if not self.spec_path.is_file():
            raise StoreError(f"{self.spec_path}: missing; expected the resolved spec `bench run` writes into every "
                             "run folder (a folder made by an older bench: rerun it)")
        return load_spec(self.spec_path)

    # -- locking ----------------------------------------------------------------------------
    def lock(self, rank: int = 0, world: int = 1, launch: str | None = None, plan: str | None = None, *,
             wait: float = LOCK_WAIT_S) -> RunLock:
        """Join the writers of this run folder as ``rank`` of a launch of ``world`` processes, or fail at once.

        One run-level lock: each writer holds ``.lock.rank<r>`` while it runs, and ``.lock.json`` records the
        world size (with ``launch``, an id the launcher gives all its ranks, and ``plan``, a hash of what the
        launch makes) of the writers now live. A writer is refused when its rank is taken, or when live writers
        belong to a launch of another world size, launch id or plan: a plain run never shares a folder with
        ranks, nor ranks of two launches (whose shares could overlap). Joining
        happens under ``.lock``, held for a moment, so two starts never race. The first writer (no other one
        live) removes the temporary files killed writers left behind (:meth:`clean_temporaries`).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        guard = FileLock(str(self.root / LOCK))
        try:
            guard.acquire(timeout=wait)
        except Timeout as err:
            raise StoreError(f"{self.root / LOCK}: expected to take this run folder's lock within {wait:.0f} s; "
                             "another `bench run` holds it while it starts; try again") from err
        try:
            live = self.live_ranks()
            if live:
                self._check_joinable(live, rank, world, launch, plan)
            mine = FileLock(str(self.root / f"{LOCK}.rank{rank}"))
            try:
                mine.acquire(timeout=0)  # free: every writer takes its rank's lock under the guard
            except Timeout as err:
                raise self._rank_taken(rank, world) from err
            cleaned = 0
            if not live:
                record = {"world_size": world, "launch": launch, "plan": plan, "pid": os.getpid(),
                          "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                atomic_write_json(self.root / LOCK_RECORD, record)
                cleaned = self.clean_temporaries()
            return RunLock(self.root, rank, world, mine, cleaned)
        finally:
            guard.release()

    def live_ranks(self) -> set[int]:
        """The ranks whose lock a live process holds now."""
        live = set()
        for path in self.root.glob(f"{LOCK}.rank*"):
            suffix = path.name.removeprefix(f"{LOCK}.rank")
            if not (suffix.isascii() and suffix.isdigit()):
                continue
            probe = FileLock(str(path))
            try:
                probe.acquire(timeout=0)
            except Timeout:
                live.add(int(suffix))
            else:
                probe.release()
        return live

    def _rank_taken(self, rank: int, world: int) -> StoreError:
        who = "" if world == 1 else f" as rank {rank}"
        return StoreError(
            f"{self.root}: another `bench run` is writing this run folder{who} (lock {LOCK}.rank{rank} is held); "
            "expected one writer per rank; wait for it to finish or pass a different --out"
        )

    def _check_joinable(self, live: set[int], rank: int, world: int, launch: str | None, plan: str | None) -> None:
        """Refuse to join live writers of another launch (or a taken rank)."""
        try:
            record = read_json(self.root / LOCK_RECORD, "the lock record")
        except (FileNotFoundError, StoreError):
            record = None
        if not isinstance(record, dict):
            record = {}
        live_world, live_launch, live_plan = record.get("world_size"), record.get("launch"), record.get("plan")
        other_launch = bool(launch and live_launch and launch != live_launch)
        other_plan = bool(plan and live_plan and plan != live_plan)
        same_launch = live_world == world and max(live) < world and not other_launch and not other_plan
        if rank in live and (same_launch or live_world is None):
            raise self._rank_taken(rank, world)
        if same_launch and world > 1:
            return
        me = "a single process (WORLD_SIZE not set or 1)" if world == 1 else f"rank {rank} of WORLD_SIZE={world}"
        if live_world == world and other_launch:
            me += f" of launch {quote_value(launch, 80)}, not {quote_value(live_launch, 80)}"
        elif live_world == world and other_plan:
            me += " with another plan: other methods, scenes, seeds or order"
        theirs = f"WORLD_SIZE={live_world}" if isinstance(live_world, int) else "an unknown world size"
        raise StoreError(
            f"{self.root / LOCK_RECORD}: ranks {sorted(live)} of a launch with {theirs} are writing this run folder; "
            f"expected no other writer, or only the other ranks of this process's launch (this process: {me}); "
            "wait for them to finish or pass a different --out"
        )

    def clean_temporaries(self) -> int:
        """Remove the temporary files killed writers left (at the run root and under ``items/``); return how
        many. Call it only when no other writer is live (:meth:`lock` does)."""
        count = 0
        for tmp in [*self.root.glob(".*.tmp"), *self.root.glob(f"{ITEMS}/**/.*.tmp")]:
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                count += 1
        return count

    # -- items ------------------------------------------------------------------------------
    def image_path(self, key: ItemKey) -> Path:
        """The PNG path of an item."""
        return self.root / f"{key.relative}.png"

    def record_path(self, key: ItemKey) -> Path:
        """The JSON record path of an item."""
        return self.root / f"{key.relative}.json"

    def is_done(self, key: ItemKey, include_failed: bool = True) -> bool:
        """True when the item's record exists and reads as ok (or, with ``include_failed``, as failed).

        Unlike :meth:`check_item` it does not open the image.
        """
        try:
            data = read_json(self.record_path(key), "an item record")
        except (FileNotFoundError, StoreError):
            return False
        status = data.get("status") if isinstance(data, dict) else None
        return status == "ok" or (include_failed and status == "failed")

    def check_item(self, key: ItemKey, seed: int, size: tuple[int, int]) -> ItemCheck:
        """Whether an item is done: its record parses and names this item and ``seed``; an ok item's PNG
        decodes and is ``size`` (width, height: the scene's) pixels.

        A file that is in the way and cannot be replaced by a rewrite (a folder where the record or image
        belongs) raises StoreError naming it.
        """
        record_path, image_path = self.record_path(key), self.image_path(key)
        for path in (record_path, image_path):
            if path.exists() and not path.is_file():
                raise StoreError(f"{path}: expected a file written by `bench run` (found a folder or another kind "
                                 "of file, which a rerun cannot replace); remove it and run again")
        if not record_path.is_file():
            return ItemCheck("missing")
        try:
            data = read_json(record_path, "an item record written by `bench run`")
            data = self._check_record(record_path, data, key)
            if data["seed"] != seed:
                raise _field_error(record_path, "seed", f"{seed}, this item's seed", data["seed"])
        except StoreError as err:
            return ItemCheck("broken", str(err))
        if data["status"] == "failed":
            return ItemCheck("failed")
        if not image_path.is_file():
            return ItemCheck("broken", f"{image_path}: expected the PNG image of the item recorded in "
                                       f"{record_path.name} (no such file)")
        try:
            with Image.open(image_path) as image:
                if image.format != "PNG" or image.size != size:
                    got = f"{image.format} {image.size[0]}x{image.size[1]}"
                    return ItemCheck("broken", f"{image_path}: expected a PNG of {size[0]}x{size[1]} pixels, the "
                                               f"scene's size (got {got})")
                image.load()
        except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ... on a broken file
            return ItemCheck("broken", f"{image_path}: expected a PNG image that decodes ({error_text(err)})")
        return ItemCheck("ok")

    def _check_record(self, path: Path, data: Any, key: ItemKey | None = None) -> dict[str, Any]:
        """An item record's fields (and that it names the item its path belongs to, when ``key`` is given)."""
        if not isinstance(data, dict):
            raise _field_error(path, "<top>", "a JSON object (an item record `bench run` writes)",
                               type(data).__name__)
        method = _need(path, data, "method", "method", str, "a method key")
        scene = _need(path, data, "scene", "scene", str, "a scene id")
        index = _need(path, data, "index", "index", int, "an integer >= 0")
        _need(path, data, "seed", "seed", int, "an integer seed")
        status = _need(path, data, "status", "status", str, f"one of {list(ITEM_STATUSES)}")
        if status not in ITEM_STATUSES:
            raise _field_error(path, "status", f"one of {list(ITEM_STATUSES)}", status)
        if key is None:
            key = ItemKey(method, scene, index)
        for name, want in (("method", key.method), ("scene", key.scene), ("index", key.index)):
            if data[name] != want:
                raise _field_error(path, name, f"{want!r}, as the record's path says", data[name])
        if path != self.record_path(key):
            raise StoreError(f"{path}: expected the record at {self.record_path(key).relative_to(self.root)}, the "
                             f"path of the item it names (method {key.method!r}, scene {key.scene!r}, index "
                             f"{key.index})")
        image = f"{key.relative}.png" if status == "ok" else None
        if data.get("image") != image:
            raise _field_error(path, "image", quote_value(image) if image else "null for a failed item",
                               data.get("image"))
        return data

    def write_item(self, key: ItemKey, seed: int, image: Image.Image | None, record: dict[str, Any]) -> None:
        """Write an item: the PNG first, then the record that marks it done."""
        data = dict(record, method=key.method, scene=key.scene, index=key.index, seed=seed)
        if image is not None:
            buffer = BytesIO()
            image.save(buffer, format="PNG")
            atomic_write_bytes(self.image_path(key), buffer.getvalue())
            data["image"] = f"{key.relative}.png"
        else:
            data["image"] = None
            self.image_path(key).unlink(missing_ok=True)
        atomic_write_json(self.record_path(key), data)

    def records(self) -> Iterator[ItemRecord]:
        """Every finished item, in sorted path order; a record that does not parse, or names another item
        than its path, raises one StoreError naming the file and field."""
        for path in sorted(self.root.glob(f"{ITEMS}/*/*/*.json")):
            named = ItemKey(path.parent.parent.name, path.parent.name, int(path.stem)) if path.stem.isdigit() else None
            data = self._check_record(path, read_json(path, "an item record written by `bench run`"), named)
            key = ItemKey(data["method"], data["scene"], data["index"])
            image = self.image_path(key) if data["status"] == "ok" else None
            yield ItemRecord(key=key, seed=data["seed"], status=data["status"], image=image, data=data)

    def load_image(self, record: ItemRecord) -> Image.Image:
        """A finished item's image decoded as RGB; a missing or broken file raises StoreError naming it."""
        if record.image is None:
            raise StoreError(f"{self.record_path(record.key)}: field 'status': expected 'ok' for an item with an "
                             f"image (got {quote_value(record.status)})")
        return load_item_image(record.image, self.record_path(record.key))


class ScoreStore:
    """The scores of one run folder: per metric key, its conventions and one file of rows per image."""

    def __init__(self, run_root: str | Path):
        self.run_root = Path(run_root)
        self.root = self.run_root / SCORES

    @property
    def reference_cache(self) -> Path:
        """Where reference embeddings are cached, by file hash."""
        return self.root / ".refcache"

    def folder(self, metric_key: str) -> Path:
        """The folder of one metric key."""
        return self.root / metric_key

    def metric_keys(self) -> list[str]:
        """Every metric key with conventions on disk, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / CONVENTIONS).is_file())

    def conventions(self, metric_key: str) -> dict[str, Any] | None:
        """The conventions a metric key's scores were made with (None before the first score)."""
        path = self.folder(metric_key) / CONVENTIONS
        if not path.is_file():
            return None
        data = read_json(path, "the conventions `bench score` writes")
        if not isinstance(data, dict):
            raise _field_error(path, "<top>", "a JSON object", type(data).__name__)
        return data

    def write_conventions(self, metric_key: str, conventions: dict[str, Any]) -> None:
        """Write a metric key's conventions atomically."""
        atomic_write_json(self.folder(metric_key) / CONVENTIONS, conventions)

    def item_path(self, metric_key: str, key: ItemKey) -> Path:
        """The score file of one image."""
        return self.folder(metric_key) / f"{key.relative}.json"

    def has_item(self, metric_key: str, key: ItemKey) -> bool:
        """True when the image is scored for that metric key."""
        return self.item_path(metric_key, key).is_file()

    def write_item(self, metric_key: str, record: ItemRecord, style: str, rows: list[dict[str, Any]]) -> None:
        """Write one image's score rows atomically."""
        key = record.key
        atomic_write_json(
            self.item_path(metric_key, key),
            {"method": key.method, "scene": key.scene, "index": key.index, "seed": record.seed, "style": style,
             "rows": rows},
        )  # fmt: skip

    def items(self, metric_key: str) -> Iterator[dict[str, Any]]:
        """Every scored image of a metric key, in sorted path order."""
        for path in sorted(self.folder(metric_key).glob(f"{ITEMS}/*/*/*.json")):
            data = read_json(path, "an image's scores `bench score` writes")
            if not isinstance(data, dict):
                raise _field_error(path, "<top>", "a JSON object", type(data).__name__)
            _need(path, data, "rows", "rows", list, "a list of score rows")
            yield data
