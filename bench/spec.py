"""Dataset specs: YAML files under ``datasets/`` loaded once into frozen dataclasses.

A spec file holds concepts, scenes and benchmarks. Loading validates every field and raises one
:class:`SpecError` naming the file, the field and what was expected. Unknown keys are errors.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.boxes import Box, validate_box

STYLES = ("real", "anime")
ADAPTER_KINDS = ("sketch", "pose")
SEED_SCHEMES = ("paper", "offset")


class SpecError(ValueError):
    """A spec file is invalid; the message names the file, the field and the expected value."""

    def __init__(self, file: str | Path, field_path: str, expected: str, got: Any = None):
        self.file, self.field_path, self.expected = str(file), field_path, expected
        got_text = "" if got is None else f" (got {got!r})"
        super().__init__(f"{file}: field '{field_path}': expected {expected}{got_text}")


@dataclass(frozen=True)
class Concept:
    """One customized concept: a person, pet, object or background scene with its own LoRA."""

    id: str
    class_name: str
    style: str
    tokens: str
    lora: str
    references: str
    masks: str | None = None
    background: bool = False
    # What a per-box classifier should see for this concept, e.g. {shape: circle, colour: red, texture: striped}
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def token_list(self) -> tuple[str, ...]:
        """The individual concept tokens, e.g. ('<catA1>', '<catA2>')."""
        return tuple(self.tokens.split())


@dataclass(frozen=True)
class Region:
    """One box of a scene: which concept goes where, with its own prompt and negative prompt."""

    concept: str
    box: Box
    prompt: str
    negative_prompt: str = ""
    adapter_weights: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scene:
    """A layout to generate: global prompt, canvas size, regions and optional condition images."""

    id: str
    prompt: str
    width: int
    height: int
    regions: tuple[Region, ...]
    negative_prompt: str = ""
    seed: int = 0
    conditions: Mapping[str, str] = field(default_factory=dict)
    adapter_global_weights: Mapping[str, float] = field(default_factory=dict)
    image_guidance: bool = False
    style: str = "real"

    @property
    def concept_ids(self) -> tuple[str, ...]:
        """Concept ids of the regions, in region order."""
        return tuple(r.concept for r in self.regions)


@dataclass(frozen=True)
class Benchmark:
    """A named selection of scenes with a seed scheme and base models per style."""

    id: str
    scenes: tuple[str, ...]
    seeds: int
    seed_scheme: str = "paper"


@dataclass(frozen=True)
class Evaluation:
    """How a dataset wants its images scored; every field optional, paths as written in the spec."""

    clip_model: str | None = None
    clip_weights: str | None = None
    classifier: str | None = None

    @property
    def is_set(self) -> bool:
        """True when any field is given."""
        return any(v is not None for v in (self.clip_model, self.clip_weights, self.classifier))


@dataclass(frozen=True)
class DatasetSpec:
    """A whole spec file: concepts, scenes, benchmarks and where its assets live."""

    name: str
    path: Path
    asset_root: str | None
    base_models: Mapping[str, str]
    concepts: Mapping[str, Concept]
    scenes: Mapping[str, Scene]
    benchmarks: Mapping[str, Benchmark]
    description: str = ""
    loss_level: int | None = None
    evaluation: Evaluation = field(default_factory=Evaluation)

    def spec_hash(self) -> str:
        """A stable hash of the spec's content (not its location).

        Optional fields added later (concept attributes, ``evaluation``) enter the hash only when set,
        so the hashes of specs that do not use them stay what they were.
        """
        payload: dict[str, Any] = {
            "name": self.name,
            "base_models": dict(self.base_models),
            "concepts": {k: _concept_to_plain(v) for k, v in self.concepts.items()},
            "scenes": {k: _scene_to_plain(v) for k, v in self.scenes.items()},
            "benchmarks": {k: asdict(v) for k, v in self.benchmarks.items()},
        }
        if self.evaluation.is_set:
            payload["evaluation"] = {k: v for k, v in asdict(self.evaluation).items() if v is not None}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:16]

    def scene_concepts(self, scene: Scene) -> list[str]:
        """Ids of the concepts a scene uses: its regions' (first occurrence order), then its background's."""
        background = self.scene_background(scene)
        return list(dict.fromkeys([*scene.concept_ids, *([background.id] if background else [])]))

    def scene_background(self, scene: Scene) -> Concept | None:
        """The background concept whose tokens appear in the scene's global prompt, if any."""
        for concept in self.concepts.values():
            if concept.background and all(tok in scene.prompt for tok in concept.token_list):
                return concept
        return None

    def resolve_ref(self, value: str) -> str:
        """A path of the spec (``evaluation.clip_weights``, ...): ``builtin:`` refs and absolute paths as they
        are, anything else relative to the spec file's folder."""
        if value.startswith("builtin:") or Path(value).is_absolute():
            return value
        return str(self.path.parent / value)


def _concept_to_plain(concept: Concept) -> dict[str, Any]:
    plain = asdict(concept)
    if not plain["attributes"]:
        del plain["attributes"]
    else:
        plain["attributes"] = dict(plain["attributes"])
    return plain


def _scene_to_plain(scene: Scene) -> dict[str, Any]:
    plain = asdict(scene)
    plain["regions"] = [dict(asdict(r), box=list(r.box)) for r in scene.regions]
    return plain


# ----------------------------------------------------------------------------------------------
# Validation helpers


_ID_RE = re.compile(r"^[A-Za-z0-9_.+\-]+$")
_TOKEN_RE = re.compile(r"^<[^<>\s]+>$")


class _Fields:
    """Reads one mapping of a spec file, tracking its field path and rejecting unknown keys."""

    def __init__(self, file: Path, where: str, data: Any, allowed: tuple[str, ...]):
        if not isinstance(data, Mapping):
            raise SpecError(file, where or "<top>", "a mapping", type(data).__name__)
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise SpecError(file, _join(where, str(unknown[0])), f"one of the known keys {list(allowed)}")
        self.file, self.where, self.data = file, where, data

    def path(self, key: str) -> str:
        return _join(self.where, key)

    def required(self, key: str) -> Any:
        if key not in self.data or self.data[key] is None:
            raise SpecError(self.file, self.path(key), "a value (required field is missing)")
        return self.data[key]

    def string(self, key: str, default: str | None = None, required: bool = True) -> str | None:
        if key not in self.data or self.data[key] is None:
            if required and default is None:
                raise SpecError(self.file, self.path(key), "a string (required field is missing)")
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise SpecError(self.file, self.path(key), "a string", value)
        return value

    def integer(self, key: str, default: int | None = None, minimum: int | None = None) -> int:
        value = self.data.get(key)
        if value is None:
            value = default
        if value is None:
            raise SpecError(self.file, self.path(key), "an integer (required field is missing)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self.file, self.path(key), "an integer", value)
        if minimum is not None and value < minimum:
            raise SpecError(self.file, self.path(key), f"an integer >= {minimum}", value)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise SpecError(self.file, self.path(key), "true or false", value)
        return value

    def weights(self, key: str) -> dict[str, float]:
        raw = self.data.get(key) or {}
        if not isinstance(raw, Mapping):
            raise SpecError(self.file, self.path(key), f"a mapping of {list(ADAPTER_KINDS)} to numbers", raw)
        out: dict[str, float] = {}
        for kind, value in raw.items():
            if kind not in ADAPTER_KINDS:
                raise SpecError(self.file, _join(self.path(key), str(kind)), f"one of {list(ADAPTER_KINDS)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpecError(self.file, _join(self.path(key), kind), "a number", value)
            out[kind] = float(value)
        return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_id(file: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise SpecError(file, where, "an id of letters, digits, '_', '-', '.', '+'", value)
    return value


# ----------------------------------------------------------------------------------------------
# Loading


def load_spec(path: str | Path, size_multiple: int = 8) -> DatasetSpec:
    """Load and validate one spec file. ``size_multiple`` is the pixel multiple the models need."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SpecError(file, "<file>", "an existing YAML spec file") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"<yaml line {mark.line + 1}, column {mark.column + 1}>" if mark else "<yaml>"
        raise SpecError(file, where, f"well-formed YAML ({getattr(err, 'problem', err)})") from err
    top = _Fields(
        file,
        "",
        data,
        ("name", "description", "asset_root", "base_models", "concepts", "scenes", "benchmarks",
         "loss_level", "evaluation"),
    )
    name = _check_id(file, "name", top.required("name"))
    base_models = _load_base_models(file, top.data.get("base_models") or {})
    concepts = _load_concepts(file, top.required("concepts"))
    scenes = _load_scenes(file, top.required("scenes"), concepts, size_multiple)
    benchmarks = _load_benchmarks(file, top.data.get("benchmarks") or [], scenes)
    loss_level = top.data.get("loss_level")
    if loss_level is not None and (isinstance(loss_level, bool) or not isinstance(loss_level, int)):
        raise SpecError(file, "loss_level", "an integer downsampling factor of the latent (e.g. 4)",
                        loss_level)
    for i, scene in enumerate(scenes.values()):
        if scene.style not in base_models and base_models:
            raise SpecError(file, f"scenes[{i}].style", f"a style with a base model {list(base_models)}",
                            scene.style)
    return DatasetSpec(
        name=name,
        path=file.resolve(),
        asset_root=top.string("asset_root", required=False),
        base_models=base_models,
        concepts=concepts,
        scenes=scenes,
        benchmarks=benchmarks,
        description=top.string("description", default="", required=False) or "",
        loss_level=loss_level,
        evaluation=_load_evaluation(file, top.data.get("evaluation")),
    )


def _load_evaluation(file: Path, raw: Any) -> Evaluation:
    if raw is None:
        return Evaluation()
    f = _Fields(file, "evaluation", raw, ("clip_model", "clip_weights", "classifier"))
    values = {}
    for key, what in (
        ("clip_model", "an open_clip model name or builtin:NAME (e.g. builtin:toy-clip)"),
        ("clip_weights", "a CLIP weights file (relative to the spec's folder) or builtin:NAME"),
        ("classifier", "a per-box classifier: builtin:toy-classifier or a .safetensors file"),
    ):
        value = f.data.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SpecError(file, f.path(key), what, value)
        values[key] = value
    return Evaluation(**values)


def _load_base_models(file: Path, raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise SpecError(file, "base_models", f"a mapping of style {list(STYLES)} to a model path", raw)
    out = {}
    for style, ref in raw.items():
        if style not in STYLES:
            raise SpecError(file, f"base_models.{style}", f"one of the styles {list(STYLES)}")
        if not isinstance(ref, str) or not ref:
            raise SpecError(file, f"base_models.{style}", "a model path or builtin:NAME", ref)
        out[style] = ref
    return out


def _load_concepts(file: Path, raw: Any) -> dict[str, Concept]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(file, "concepts", "a non-empty list of concepts", raw)
    concepts: dict[str, Concept] = {}
    for i, item in enumerate(raw):
        f = _Fields(
            file,
            f"concepts[{i}]",
            item,
            ("id", "class_name", "style", "tokens", "lora", "references", "masks", "background", "attributes"),
        )
        cid = _check_id(file, f.path("id"), f.required("id"))
        if cid in concepts:
            raise SpecError(file, f.path("id"), "a unique concept id", cid)
        style = f.string("style")
        if style not in STYLES:
            raise SpecError(file, f.path("style"), f"one of {list(STYLES)}", style)
        tokens = f.string("tokens")
        assert tokens is not None
        if not tokens.split() or not all(_TOKEN_RE.match(t) for t in tokens.split()):
            raise SpecError(file, f.path("tokens"), "space-separated tokens like '<catA1> <catA2>'", tokens)
        concepts[cid] = Concept(
            id=cid,
            class_name=f.string("class_name") or "",
            style=style,
            tokens=tokens,
            lora=f.string("lora") or "",
            references=f.string("references") or "",
            masks=f.string("masks", required=False),
            background=f.boolean("background", False),
            attributes=_load_attributes(file, f.path("attributes"), f.data.get("attributes")),
        )
    return concepts


def _load_attributes(file: Path, where: str, raw: Any) -> dict[str, str]:
    expected = "a mapping of attribute names to strings, e.g. {shape: circle, colour: red, texture: striped}"
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpecError(file, where, expected, raw)
    for key, value in raw.items():
        if not isinstance(key, str) or not _ID_RE.match(key):
            raise SpecError(file, where, "attribute names of letters, digits, '_', '-', '.', '+'", key)
        if not isinstance(value, str) or not value.strip():
            raise SpecError(file, _join(where, key), "a non-empty string", value)
    return dict(raw)


def _load_scenes(
    file: Path, raw: Any, concepts: Mapping[str, Concept], size_multiple: int
) -> dict[str, Scene]:
    if not isinstance(raw, list) or not raw:
        raise SpecError(file, "scenes", "a non-empty list of scenes", raw)
    scenes: dict[str, Scene] = {}
    for i, item in enumerate(raw):
        f = _Fields(
            file,
            f"scenes[{i}]",
            item,
            (
                "id",
                "prompt",
                "negative_prompt",
                "width",
                "height",
                "regions",
                "seed",
                "conditions",
                "adapter_global_weights",
                "image_guidance",
                "style",
            ),
        )
        sid = _check_id(file, f.path("id"), f.required("id"))
        if sid in scenes:
            raise SpecError(file, f.path("id"), "a unique scene id", sid)
        width = f.integer("width", minimum=size_multiple)
        height = f.integer("height", minimum=size_multiple)
        for key, value in (("width", width), ("height", height)):
            if value % size_multiple:
                raise SpecError(file, f.path(key), f"a multiple of {size_multiple} pixels", value)
        regions = _load_regions(file, f.path("regions"), f.required("regions"), concepts)
        conditions = f.data.get("conditions") or {}
        if not isinstance(conditions, Mapping) or not set(conditions) <= set(ADAPTER_KINDS):
            raise SpecError(file, f.path("conditions"), f"a mapping of {list(ADAPTER_KINDS)} to image paths",
                            conditions)
        for kind, image in conditions.items():
            if not isinstance(image, str) or not image:
                raise SpecError(file, _join(f.path("conditions"), kind), "an image path", image)
        image_guidance = f.boolean("image_guidance", False)
        if image_guidance and not conditions:
            raise SpecError(file, f.path("conditions"),
                            f"at least one condition image {list(ADAPTER_KINDS)} when image_guidance is true")
        style = f.string("style", default=None, required=False)
        if style is None:
            styles = {concepts[r.concept].style for r in regions}
            style = styles.pop() if len(styles) == 1 else "real"
        if style not in STYLES:
            raise SpecError(file, f.path("style"), f"one of {list(STYLES)}", style)
        scenes[sid] = Scene(
            id=sid,
            prompt=f.string("prompt") or "",
            negative_prompt=f.string("negative_prompt", default="", required=False) or "",
            width=width,
            height=height,
            regions=regions,
            seed=f.integer("seed", default=0, minimum=0),
            conditions=dict(conditions),
            adapter_global_weights=f.weights("adapter_global_weights"),
            image_guidance=image_guidance,
            style=style,
        )
    return scenes


def _load_regions(file: Path, where: str, raw: Any, concepts: Mapping[str, Concept]) -> tuple[Region, ...]:
    if not isinstance(raw, list):
        raise SpecError(file, where, "a list of regions", raw)
    regions = []
    for j, item in enumerate(raw):
        f = _Fields(
            file, f"{where}[{j}]", item, ("concept", "box", "prompt", "negative_prompt", "adapter_weights")
        )
        concept = f.string("concept")
        if concept not in concepts:
            raise SpecError(
                file, f.path("concept"), f"a concept id defined in 'concepts' {sorted(concepts)}", concept
            )
        try:
            box = validate_box(f.required("box"))
        except ValueError as err:
            raise SpecError(file, f.path("box"), str(err), f.data.get("box")) from err
        prompt = f.string("prompt") or ""
        missing = [t for t in concepts[concept].token_list if t not in prompt]
        if missing:
            raise SpecError(
                file, f.path("prompt"), f"a region prompt containing the concept tokens {missing}", prompt
            )
        regions.append(
            Region(
                concept=concept,
                box=box,
                prompt=prompt,
                negative_prompt=f.string("negative_prompt", default="", required=False) or "",
                adapter_weights=f.weights("adapter_weights"),
            )
        )
    return tuple(regions)


def _load_benchmarks(file: Path, raw: Any, scenes: Mapping[str, Scene]) -> dict[str, Benchmark]:
    if not isinstance(raw, list):
        raise SpecError(file, "benchmarks", "a list of benchmarks", raw)
    out: dict[str, Benchmark] = {}
    for i, item in enumerate(raw):
        f = _Fields(file, f"benchmarks[{i}]", item, ("id", "scenes", "seeds", "seed_scheme"))
        bid = _check_id(file, f.path("id"), f.required("id"))
        if bid in out:
            raise SpecError(file, f.path("id"), "a unique benchmark id", bid)
        names = f.data.get("scenes", "all")
        if names == "all":
            names = list(scenes)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SpecError(file, f.path("scenes"), "'all' or a list of scene ids", names)
        for n in names:
            if n not in scenes:
                raise SpecError(file, f.path("scenes"), f"scene ids defined in 'scenes' {sorted(scenes)}", n)
        scheme = f.string("seed_scheme", default="paper", required=False)
        if scheme not in SEED_SCHEMES:
            raise SpecError(file, f.path("seed_scheme"), f"one of {list(SEED_SCHEMES)}", scheme)
        out[bid] = Benchmark(id=bid, scenes=tuple(names), seeds=f.integer("seeds", default=1, minimum=1),
                             seed_scheme=scheme or "paper")
    return out
