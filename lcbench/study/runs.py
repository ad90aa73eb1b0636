"""The run folders an app or a study was started with, and safe access to their images.

Everything the dashboard shows comes through a :class:`RunCatalog`: runs are chosen by name from
the folders given at start-up, items by (run, method, scene, index), and an image path is only
opened after checking it lies inside its run folder. No path ever comes from the browser.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from bench.spec import DatasetSpec, Scene, SpecError
from bench.store import RunStore, StoreError


class AccessError(PermissionError):
    """A request for a run or file the app was not started with."""


@dataclass(frozen=True)
class RunInfo:
    """One run folder: its name (unique within the catalog), manifest and spec (when loadable)."""

    name: str
    root: Path
    manifest: dict[str, Any]
    spec: DatasetSpec | None
    spec_error: str | None = None

    def method_name(self, key: str) -> str:
        """The display name of a method key from the manifest (the key itself when absent)."""
        entry = self.manifest.get("methods", {}).get(key, {})
        return str(entry.get("name", key)) if isinstance(entry, dict) else key

    def scene(self, scene_id: str) -> Scene | None:
        """The spec's scene, or None when the spec could not be loaded or lacks it."""
        return self.spec.scenes.get(scene_id) if self.spec else None


@dataclass(frozen=True)
class ImageItem:
    """One generated image of a run, with what the views filter on."""

    run: str
    method: str
    label: str
    scene: str
    index: int
    seed: int
    status: str
    relative_image: str | None
    n_concepts: int | None
    style: str | None

    @property
    def ok(self) -> bool:
        """True when the item has an image."""
        return self.status == "ok" and self.relative_image is not None


def _load_run(root: Path, name: str) -> RunInfo:
    store = RunStore(root)
    manifest = store.read_manifest()
    spec, error = None, None
    try:
        spec = store.read_spec()
    except (SpecError, StoreError) as err:
        error = str(err)
    return RunInfo(name=name, root=root, manifest=manifest, spec=spec, spec_error=error)


def _unique_names(roots: list[Path]) -> list[str]:
    counts = Counter(r.name for r in roots)
    names = []
    for root in roots:
        names.append(root.name if counts[root.name] == 1 else f"{root.parent.name}/{root.name}")
    if len(set(names)) != len(names):
        raise StoreError(f"run folders given twice: {[str(r) for r in roots]}")
    return names


class RunCatalog:
    """The runs an app was started with; the only way views reach run files."""

    def __init__(self, run_dirs: list[str | Path]):
        roots = [Path(d).resolve() for d in run_dirs]
        for root in roots:
            if not (root / "manifest.json").is_file():
                raise StoreError(
                    f"{root}: not a run folder (no manifest.json); pass folders written by `bench run`"
                )
        self.runs: dict[str, RunInfo] = {
            name: _load_run(root, name) for root, name in zip(roots, _unique_names(roots), strict=True)
        }
        self._labels = self._method_labels()

    def _method_labels(self) -> dict[tuple[str, str], str]:
        keys = [(run.name, key) for run in self.runs.values() for key in run.manifest.get("methods", {})]
        counts = Counter(key for _, key in keys)
        return {(run, key): key if counts[key] == 1 else f"{run}:{key}" for run, key in keys}

    def run(self, name: str) -> RunInfo:
        """A run by name; refuses names the app was not started with."""
        if name not in self.runs:
            raise AccessError(
                f"run {name!r} is not one of the runs this app was started with {sorted(self.runs)}"
            )
        return self.runs[name]

    def label(self, run: str, method: str) -> str:
        """The method's label across runs: its key, prefixed with the run name when keys collide."""
        return self._labels.get((run, method), f"{run}:{method}")

    def items(self, runs: list[str] | None = None) -> list[ImageItem]:
        """Every finished item of the given runs (all runs by default)."""
        out = []
        for name in runs if runs is not None else list(self.runs):
            info = self.run(name)
            for record in RunStore(info.root).records():
                scene = info.scene(record.key.scene)
                out.append(
                    ImageItem(
                        run=name,
                        method=record.key.method,
                        label=self.label(name, record.key.method),
                        scene=record.key.scene,
                        index=record.key.index,
                        seed=record.seed,
                        status=record.status,
                        relative_image=record.data.get("image") if record.ok else None,
                        n_concepts=len(scene.regions) if scene else None,
                        style=scene.style if scene else None,
                    )
                )
        return out

    def image_path(self, run: str, relative: str) -> Path:
        """The absolute path of a run file, refused unless it lies inside that run folder."""
        root = self.run(run).root
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise AccessError(f"{relative!r} is not an image inside run {run!r}")
        return path

    def run_at(self, root: str | Path) -> RunInfo:
        """The run whose folder is ``root``; refuses folders the app was not started with."""
        wanted = Path(root).resolve()
        for info in self.runs.values():
            if info.root == wanted:
                return info
        raise AccessError(f"{wanted} is not one of the run folders this app was started with")

    def open_image(self, item: ImageItem) -> Image.Image:
        """Load an item's image (RGB)."""
        if not item.ok:
            raise AccessError(
                f"item {item.method}/{item.scene}/{item.index} of run {item.run!r} has no image"
            )
        with Image.open(self.image_path(item.run, item.relative_image or "")) as image:
            return image.convert("RGB")
