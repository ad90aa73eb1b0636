"""Where a dataset's files live: the asset root, path resolution and the check for missing assets.

The asset root of a dataset is chosen in this order (first one set wins):

1. the ``root`` argument (the CLI's ``--assets DIR`` flag);
2. the ``LCBENCH_ASSETS`` environment variable: ``NAME=DIR`` pairs separated by ``os.pathsep``
   (``paper=/data/lc:tiny=/tmp/t``), or a bare ``DIR`` that applies to every dataset whose spec does
   not name a ``builtin:`` root;
3. the config file ``$XDG_CONFIG_HOME/lcbench/config.yaml`` (default ``~/.config/lcbench/config.yaml``),
   key ``assets: {NAME: DIR}``;
4. the spec's own ``asset_root`` (a path relative to the spec file's folder, or ``builtin:NAME``).

``builtin:NAME`` is an asset root a plugin makes (kind ``asset_root`` of :func:`bench.models.create`),
e.g. ``builtin:random``, the random-weight world's generated assets in the cache folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.models import BUILTIN_PREFIX, builtins, create, is_builtin, looks_like_hub_id
from bench.spec import Concept, DatasetSpec, Scene

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
ENV_ASSETS = "LCBENCH_ASSETS"


class AssetError(ValueError):
    """An asset cannot be found or the asset root is not set; the message says what to do."""


def config_file() -> Path:
    """The user config file: ``$XDG_CONFIG_HOME/lcbench/config.yaml`` (default ``~/.config/lcbench``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "lcbench" / "config.yaml"


def _env_root(name: str, spec_root: str | None) -> str | None:
    """The dataset's root from ``LCBENCH_ASSETS`` (``NAME=DIR`` pairs, or a bare DIR), if set."""
    raw = os.environ.get(ENV_ASSETS, "").strip()
    if not raw:
        return None
    bare: str | None = None
    for entry in raw.split(os.pathsep):
        key, sep, value = entry.partition("=")
        if sep and key.strip() == name:
            return value.strip()
        if not sep and entry.strip():
            bare = entry.strip()
    if bare and not (spec_root or "").startswith(BUILTIN_PREFIX):
        return bare
    return None


def _config_root(name: str) -> str | None:
    """The dataset's root from the config file's ``assets:`` mapping, if any."""
    path = config_file()
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise AssetError(f"{path}: expected well-formed YAML with 'assets: {{NAME: DIR}}' ({err})") from err
    assets = data.get("assets", {}) if isinstance(data, dict) else None
    if not isinstance(assets, dict):
        raise AssetError(
            f"{path}: field 'assets': expected a mapping of dataset name to folder, got {assets!r}"
        )
    value = assets.get(name)
    if value is not None and not isinstance(value, str):
        raise AssetError(f"{path}: field 'assets.{name}': expected a folder path, got {value!r}")
    return value


class AssetResolver:
    """Resolves a dataset's relative asset paths against its asset root (order: see the module docstring).

    A ``builtin:random`` root is generated on first use. Paths in the spec that are absolute stay as they are.
    """

    def __init__(self, spec: DatasetSpec, root: str | Path | None = None):
        self.spec = spec
        self._root: Path | None = None
        self._ready = False
        if root is not None:
            self.root_ref, self.root_source = str(root), "--assets"
        elif (env := _env_root(spec.name, spec.asset_root)) is not None:
            self.root_ref, self.root_source = env, ENV_ASSETS
        elif (conf := _config_root(spec.name)) is not None:
            self.root_ref, self.root_source = conf, str(config_file())
        elif spec.asset_root:
            self.root_ref, self.root_source = spec.asset_root, f"{spec.path}: asset_root"
        else:
            self.root_ref, self.root_source = "", ""
        if is_builtin(self.root_ref) and self.root_ref[len(BUILTIN_PREFIX) :] not in builtins("asset_root"):
            raise AssetError(
                f"{self.root_source}: unknown asset root '{self.root_ref}'; expected a folder or one of "
                f"{[BUILTIN_PREFIX + n for n in builtins('asset_root')]}"
            )

    @property
    def root(self) -> Path:
        """The asset root folder (a built-in root is generated the first time it is asked for)."""
        if self._ready:
            assert self._root is not None
            return self._root
        if not self.root_ref:
            raise AssetError(
                f"{self.spec.path}: dataset '{self.spec.name}' has no asset root; pass --assets DIR, or set "
                f"asset_root in the spec ({ENV_ASSETS}=DIR or 'assets: {{{self.spec.name}: DIR}}' in "
                f"{config_file()} also work)"
            )
        if is_builtin(self.root_ref):
            self._root = Path(create(self.root_ref, "asset_root", where=self.root_source))
        else:
            path = Path(self.root_ref).expanduser()
            if not path.is_absolute() and self.root_source.endswith("asset_root"):
                path = self.spec.path.parent / path
            self._root = path.resolve()
        self._ready = True
        return self._root

    def resolve(self, relative: str) -> Path:
        """The absolute path of a spec path: under the root, or unchanged when already absolute."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    def base_model_ref(self, style: str) -> str:
        """The base model of a style for ``load_base_model``: ``builtin:`` refs unchanged, paths resolved."""
        if style not in self.spec.base_models:
            raise AssetError(
                f"{self.spec.path}: field 'base_models.{style}': expected a base model for style "
                f"'{style}' (the spec has {sorted(self.spec.base_models)})"
            )
        ref = self.spec.base_models[style]
        return ref if is_builtin(ref) else str(self.resolve(ref))

    def concept(self, concept_id: str) -> Concept:
        """The spec's concept by id; an unknown id names the spec and the known ids."""
        if concept_id not in self.spec.concepts:
            raise AssetError(
                f"{self.spec.path}: no concept '{concept_id}'; expected one of {sorted(self.spec.concepts)}"
            )
        return self.spec.concepts[concept_id]

    def lora_path(self, concept_id: str) -> Path:
        """The concept's LoRA file."""
        return self.resolve(self.concept(concept_id).lora)

    def reference_dir(self, concept_id: str) -> Path:
        """The concept's reference image folder."""
        return self.resolve(self.concept(concept_id).references)

    def reference_images(self, concept_id: str) -> list[Path]:
        """The concept's reference images, sorted by name; a missing or empty folder is an error."""
        folder = self.reference_dir(concept_id)
        images = _images_in(folder)
        if not images:
            raise AssetError(
                f"{self.spec.path}: field 'concepts[{concept_id}].references': expected a folder "
                f"with images {list(IMAGE_SUFFIXES)} at {folder}"
            )
        return images

    def mask_images(self, concept_id: str) -> list[Path]:
        """The concept's mask images sorted by name, or ``[]`` when the spec gives no mask folder."""
        concept = self.concept(concept_id)
        if concept.masks is None:
            return []
        folder = self.resolve(concept.masks)
        images = _images_in(folder)
        if not images:
            raise AssetError(
                f"{self.spec.path}: field 'concepts[{concept_id}].masks': expected a folder with "
                f"images {list(IMAGE_SUFFIXES)} at {folder}"
            )
        return images

    def condition_image(self, scene: Scene, kind: str) -> Path:
        """The scene's condition image of a kind ('pose' or 'sketch')."""
        if kind not in scene.conditions:
            raise AssetError(
                f"{self.spec.path}: field 'scenes[{scene.id}].conditions.{kind}': expected a "
                f"condition image (the scene has {sorted(scene.conditions)})"
            )
        return self.resolve(scene.conditions[kind])


def _images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )


# ----------------------------------------------------------------------------------------------
# Checking


@dataclass(frozen=True)
class MissingAsset:
    """One asset a dataset needs and does not have: what, whose, which spec field, where it was expected."""

    kind: str  # 'base_model', 'lora', 'references', 'masks', 'condition'
    owner: str  # the style, concept id or scene id
    field: str  # e.g. 'concepts[catA].lora'
    path: str  # the absolute expected path (or the built-in ref)
    problem: str = "missing"


def missing_assets(
    spec: DatasetSpec, resolver: AssetResolver, scene_ids: Iterable[str] | None = None, *, open_files: bool = False
) -> list[MissingAsset]:
    """Every asset that the given scenes (default: the whole spec) need and that is missing or empty.

    With ``open_files`` the LoRA files and single-file ``.ckpt`` base models that exist are opened as a run
    opens them (``torch.load(weights_only=True)``: nothing in them is run), and each one a run would refuse
    (pickled code, a broken or unknown file) is listed too, with why.
    """
    scenes = _select_scenes(spec, scene_ids)
    if scene_ids is None:
        styles = sorted(spec.base_models)
        concept_ids = list(spec.concepts)
    else:
        styles = sorted({s.style for s in scenes})
        concept_ids = _used_concepts(spec, scenes)
    found: list[MissingAsset] = []
    for style in styles:
        found += _check_base_model(spec, resolver, style, open_files)
    for cid in concept_ids:
        concept = spec.concepts[cid]
        lora = resolver.resolve(concept.lora)
        if not lora.is_file():
            found.append(MissingAsset("lora", cid, f"concepts[{cid}].lora", str(lora)))
        elif open_files:
            found += _open_lora(lora, cid)
        found += _check_folder(resolver.resolve(concept.references), "references", cid)
        if concept.masks is not None:
            found += _check_folder(resolver.resolve(concept.masks), "masks", cid)
    for scene in scenes:
        if scene.image_guidance:
            for kind, rel in sorted(scene.conditions.items()):
                path = resolver.resolve(rel)
                if not path.is_file():
                    found.append(
                        MissingAsset(
                            "condition", scene.id, f"scenes[{scene.id}].conditions.{kind}", str(path)
                        )
                    )
    return found


def _select_scenes(spec: DatasetSpec, scene_ids: Iterable[str] | None) -> list[Scene]:
    if scene_ids is None:
        return list(spec.scenes.values())
    ids = list(scene_ids)
    unknown = [s for s in ids if s not in spec.scenes]
    if unknown:
        raise AssetError(f"{spec.path}: no scene {unknown[0]!r}; expected one of {sorted(spec.scenes)}")
    return [spec.scenes[s] for s in ids]


def _used_concepts(spec: DatasetSpec, scenes: Sequence[Scene]) -> list[str]:
    return list(dict.fromkeys(cid for scene in scenes for cid in spec.scene_concepts(scene)))


def _open_lora(path: Path, cid: str) -> list[MissingAsset]:
    """The LoRA file as a run reads it (weights only, nothing run): [] when usable, else why it is refused."""
    from bench.lora.formats import LoraError, load_lora

    field = f"concepts[{cid}].lora"
    try:
        load_lora(path, where=field)
    except LoraError as err:
        got = "" if err.got is None else f" (got {err.got})"
        return [MissingAsset("lora", cid, field, str(path), f"refused: expected {err.expected}{got}")]
    return []


def _open_checkpoint(path: Path, style: str, field: str) -> list[MissingAsset]:
    """A single-file ``.ckpt`` base model opened weights-only: [] when it holds plain tensors, else why not."""
    from bench.safeload import WeightsFileError, load_weights_only

    try:
        load_weights_only(path, mmap=True)
    except WeightsFileError as err:
        return [MissingAsset("base_model", style, field, str(path), f"refused: {err.reason}")]
    return []


def _check_base_model(
    spec: DatasetSpec, resolver: AssetResolver, style: str, open_files: bool = False
) -> list[MissingAsset]:
    ref = resolver.base_model_ref(style)
    field = f"base_models.{style}"
    if is_builtin(ref):
        known = ref[len(BUILTIN_PREFIX) :] in builtins("pipeline")
        return [] if known else [MissingAsset("base_model", style, field, ref, "unknown built-in model")]
    path = Path(ref)
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return []
        return [MissingAsset("base_model", style, field, ref, "folder without model_index.json")]
    if path.is_file():
        return _open_checkpoint(path, style, field) if open_files and path.suffix == ".ckpt" else []
    raw = spec.base_models.get(style, "")
    if looks_like_hub_id(raw):
        hint = f"missing; '{raw}' looks like a hub id: `huggingface-cli download {raw} --local-dir {ref}`"
        return [MissingAsset("base_model", style, field, ref, hint)]
    return [MissingAsset("base_model", style, field, ref)]


def _check_folder(folder: Path, kind: str, cid: str) -> list[MissingAsset]:
    field = f"concepts[{cid}].{kind}"
    if not folder.is_dir():
        return [MissingAsset(kind, cid, field, str(folder))]
    if not _images_in(folder):
        return [MissingAsset(kind, cid, field, str(folder), "no images")]
    return []


def format_missing(missing: Sequence[MissingAsset]) -> str:
    """A plain-text table of missing assets, as ``bench check-assets`` prints it."""
    if not missing:
        return "All assets present."
    header = ("kind", "owner", "field", "problem", "expected path")
    rows = [header] + [(m.kind, m.owner, m.field, m.problem, m.path) for m in missing]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    what = "missing or refused" if any(m.problem.startswith("refused") for m in missing) else "missing"
    lines = [f"{len(missing)} {what} asset{'s' if len(missing) != 1 else ''}:"]
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    return "\n".join(lines)
