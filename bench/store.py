"""The run store: one folder per run, one PNG and one JSON record per (method, scene, seed).

Layout::

    RUN/manifest.json                                   spec hash, methods and params, versions, git revision
    RUN/spec.json                                       the resolved spec the run used (bench.resolved)
    RUN/items/<method_key>/<scene_id>/<index>.png       the image (absent for a failed item)
    RUN/items/<method_key>/<scene_id>/<index>.json      its record; written last, so it marks the item done
    RUN/scores/<metric key>/conventions.json            how a metric's scores were made (ScoreStore)
    RUN/scores/<metric key>/items/<method>/<scene>/<index>.json   one image's score rows
    RUN/scores/.refcache/                               reference embeddings by file hash

Every file is written to a temporary name and renamed into place, so a killed run leaves no
half-written file; a rerun skips the items whose record exists.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from PIL import Image

from bench.spec import DatasetSpec, load_spec

MANIFEST = "manifest.json"
SPEC = "spec.json"
ITEMS = "items"
SCORES = "scores"
CONVENTIONS = "conventions.json"


class StoreError(RuntimeError):
    """The run folder cannot be used as asked (locked, or made from another spec)."""


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
        """The run's manifest; raises StoreError when the folder is not a run."""
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise StoreError(f"{self.root}: not a run folder (no {MANIFEST})") from err

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
    def lock(self, rank: int = 0) -> FileLock:
        """Take the run folder's lock for one process rank at once; a second writer fails at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / f".lock.rank{rank}"))
        try:
            lock.acquire(timeout=0)
        except Timeout as err:
            raise StoreError(
                f"{self.root}: another `bench run` is writing this run folder (lock .lock.rank{rank} is held); "
                "wait for it to finish or pass a different --out"
            ) from err
        return lock

    def clean_temporaries(self) -> int:
        """Remove temporary files a killed writer left behind; return how many."""
        count = 0
        for tmp in self.root.glob(f"{ITEMS}/**/.*.tmp"):
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
        """True when the item's record exists (and, unless ``include_failed``, says it succeeded)."""
        path = self.record_path(key)
        if not path.is_file():
            return False
        if include_failed:
            return True
        return json.loads(path.read_text(encoding="utf-8")).get("status") == "ok"

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
        """Every finished item, in sorted path order."""
        for path in sorted(self.root.glob(f"{ITEMS}/*/*/*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            key = ItemKey(data["method"], data["scene"], int(data["index"]))
            image = self.root / data["image"] if data.get("image") else None
            yield ItemRecord(key=key, seed=int(data["seed"]), status=data.get("status", "ok"), image=image, data=data)


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
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

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
            yield json.loads(path.read_text(encoding="utf-8"))
