"""Dataset specs: YAML files under ``datasets/`` loaded once into frozen dataclasses.

A spec file holds concepts, scenes and benchmarks. Loading validates every field and raises one
:class:`SpecError` naming the file, the YAML line, the field and what was expected. Unknown keys are errors,
and so is a key written twice in one mapping. The YAML reader is bounded: nesting depth and the content
that aliases (``*name``) repeat are capped, and an error message quotes at most a few hundred characters
of the offending value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bench.boxes import Box, validate_box

STYLES = ("real", "anime")
ADAPTER_KINDS = ("sketch", "pose")
SEED_SCHEMES = ("paper", "offset")
# Whether a scene runs by default: 'ok', or a fact about the upstream scripts the layout was transcribed from.
SCENE_STATUSES = ("ok", "disabled-upstream", "broken-upstream")

MAX_SEED = 2**63 - 1  # a seed must fit a signed 64-bit integer (torch.Generator.manual_seed, JSON readers)
MAX_ID_LENGTH = 128  # ids become folder and file names
MAX_YAML_DEPTH = 64  # nesting levels of one spec file (a spec needs 7)
MAX_ALIAS_EXPANSION = 250_000  # characters (plus one per node) that aliases may repeat in one file
_QUOTE_LIMIT = 200  # characters of an offending value an error message quotes


class SpecError(ValueError):
    """A spec file is invalid; the message names the file, the YAML line, the field and the expected value.

    ``line`` and ``column`` (1-based) are set when the position in the YAML text is known; the message then
    reads ``"{file}: line L, column C: field '{path}': expected {what} (got {value})"``. The quoted value is
    cut to a few hundred characters (its type and length are added when it is cut).
    """

    def __init__(
        self,
        file: str | Path,
        field_path: str,
        expected: str,
        got: Any = None,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file, self.field_path, self.expected = str(file), field_path, expected
        self.got, self.line, self.column = got, line, column
        where = ""
        if line is not None and not field_path.startswith("<yaml"):  # '<yaml line L, column C>' says it already
            where = f"line {line}: " if column is None else f"line {line}, column {column}: "
        got_text = "" if got is None else f" (got {quote_value(got)})"
        super().__init__(f"{file}: {where}field '{field_path}': expected {expected}{got_text}")

    def located(self, line: int | None, column: int | None) -> SpecError:
        """The same error at a YAML position."""
        return SpecError(self.file, self.field_path, self.expected, self.got, line=line, column=column)


def quote_value(value: Any, limit: int = _QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters, doing bounded work however large the value is.

    A cut text ends in an ellipsis and names the value's type and length, e.g.
    ``'aaaa…' (str of 5000 characters)``.
    """
    text = _bounded_repr(value, limit + 1, 0)
    if len(text) <= limit:
        return text
    size = ""
    if isinstance(value, str | bytes):
        size = f" of {len(value)} characters" if isinstance(value, str) else f" of {len(value)} bytes"
    elif isinstance(value, list | tuple | dict | set | frozenset):
        size = f" of {len(value)} items"
    return f"{text[:limit]}… ({type(value).__name__}{size})"


def _bounded_repr(value: Any, budget: int, depth: int) -> str:
    """repr(value), but stops once ``budget`` characters are written (and below 20 levels)."""
    if depth > 20:
        return "..."
    kind = type(value)
    if kind is str or kind is bytes:
        return repr(value[: budget + 1])
    if kind in (list, tuple, dict):
        opening, closing = {list: "[]", tuple: "()", dict: "{}"}[kind]
        parts: list[str] = []
        used = 1
        items = value.items() if kind is dict else value
        for item in items:
            if used > budget:
                parts.append("...")
                break
            if kind is dict:
                key = _bounded_repr(item[0], budget - used, depth + 1)
                text = f"{key}: {_bounded_repr(item[1], budget - used - len(key), depth + 1)}"
            else:
                text = _bounded_repr(item, budget - used, depth + 1)
            parts.append(text)
            used += len(text) + 2
        if kind is tuple and len(parts) == 1 and len(value) == 1:
            return f"({parts[0]},)"
        return opening + ", ".join(parts) + closing
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python prints
        return f"<{kind.__name__} too large to print>"
    return text[: budget + 1]


def _key_text(key: Any) -> str:
    """A mapping key as it appears in a field path, cut to 80 characters."""
    try:
        text = str(key)
    except ValueError:  # an int of more digits than Python prints
        text = f"<{type(key).__name__} too large to print>"
    return text if len(text) <= 80 else text[:80] + "…"


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


def substitute_classes(prompt: str, concepts: Iterable[Concept]) -> str:
    """Replace each concept's token string (e.g. ``'<catA1> <catA2>'``) by its class name.

    The whole token sequence becomes one class word; a token of the concept that appears alone is
    replaced by the class word too. Runs of whitespace are collapsed.
    """
    text = prompt
    for concept in concepts:
        tokens = concept.token_list
        sequence = r"\s+".join(re.escape(t) for t in tokens)
        text = re.sub(sequence, concept.class_name, text)
        for token in tokens:
            text = text.replace(token, concept.class_name)
    return " ".join(text.split())


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
    # 'ok', 'disabled-upstream' (the upstream script switches it off) or 'broken-upstream' (it cannot run
    # there); with a one-line reason when not 'ok'. Not part of the spec hash: it changes no image.
    status: str = "ok"
    status_reason: str = ""

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
    """How a dataset wants its images scored; every field optional, paths as written in the spec.

    ``oracle`` names a renderer of perfect images of the dataset's scenes (``builtin:NAME``, kind
    ``oracle``), the calibration's oracle; without one, each concept's reference image is pasted
    into its box.
    """

    clip_model: str | None = None
    clip_weights: str | None = None
    classifier: str | None = None
    oracle: str | None = None

    @property
    def is_set(self) -> bool:
        """True when any field is given."""
        return any(v is not None for v in (self.clip_model, self.clip_weights, self.classifier, self.oracle))


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
        so the hashes of specs that do not use them stay what they were. A scene's ``status`` and
        ``status_reason`` never enter it: they say whether upstream runs a layout, not what it generates.
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

    def runnable_scenes(self, scene_ids: Iterable[str] | None = None, include_disabled: bool = False) -> list[str]:
        """The ids of ``scene_ids`` (default: every scene, in spec order) whose status is 'ok'.

        With ``include_disabled`` every given id is kept, whatever its status. An id the spec does not
        define raises :class:`SpecError`.
        """
        ids = list(self.scenes) if scene_ids is None else list(scene_ids)
        for sid in ids:
            if sid not in self.scenes:
                raise SpecError(self.path, "scenes", f"scene ids defined in 'scenes' {sorted(self.scenes)}", sid)
        return [sid for sid in ids if include_disabled or self.scenes[sid].status == "ok"]

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
    del plain["status"], plain["status_reason"]  # not content: see DatasetSpec.spec_hash
    plain["regions"] = [dict(asdict(r), box=list(r.box)) for r in scene.regions]
    return plain


# ----------------------------------------------------------------------------------------------
# Validation helpers


# Ids name folders and files: letters, digits, '_', '-', '+' and '.', never leading (so never '.' or '..').
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")
_NAME_RE = re.compile(r"[A-Za-z0-9_.+\-]+")  # attribute names (never a path)
_TOKEN_RE = re.compile(r"^<[^<>\s]+>$")


class _Fields:
    """Reads one mapping of a spec file, tracking its field path and rejecting unknown keys."""

    def __init__(self, file: Path, where: str, data: Any, allowed: tuple[str, ...]):
        if not isinstance(data, Mapping):
            raise SpecError(file, where or "<top>", "a mapping", type(data).__name__)
        unknown = sorted(set(data) - set(allowed), key=str)
        if unknown:
            raise SpecError(file, _join(where, _key_text(unknown[0])), f"one of the known keys {list(allowed)}")
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

    def integer(
        self, key: str, default: int | None = None, minimum: int | None = None, maximum: int | None = None,
        maximum_why: str = "",
    ) -> int:
        value = self.data.get(key)
        if value is None:
            value = default
        if value is None:
            raise SpecError(self.file, self.path(key), "an integer (required field is missing)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(self.file, self.path(key), "an integer", value)
        if minimum is not None and value < minimum:
            raise SpecError(self.file, self.path(key), f"an integer >= {minimum}", value)
        if maximum is not None and value > maximum:
            raise SpecError(self.file, self.path(key), f"an integer <= {maximum}{maximum_why}", value)
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
                raise SpecError(self.file, _join(self.path(key), _key_text(kind)), f"one of {list(ADAPTER_KINDS)}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpecError(self.file, _join(self.path(key), kind), "a number", value)
            out[kind] = float(value)
        return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_id(file: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or not _ID_RE.fullmatch(value):
        raise SpecError(
            file,
            where,
            f"an id of letters, digits, '_', '-', '.', '+' that starts with a letter or digit "
            f"(at most {MAX_ID_LENGTH} characters)",
            value,
        )
    return value


# ----------------------------------------------------------------------------------------------
# Loading


def load_spec(path: str | Path, size_multiple: int = 8) -> DatasetSpec:
    """Load and validate one spec file. ``size_multiple`` is the pixel multiple the models need.

    Every problem raises one :class:`SpecError` naming the file, the YAML line and column (where the
    text has them) and the field.
    """
    file = Path(path)
    data, positions = _read_yaml(file)
    try:
        return _build_spec(file, data, size_multiple)
    except SpecError as err:
        if err.line is not None:
            raise
        line, column = _position_of(positions, err.field_path)
        raise err.located(line, column) from err.__cause__


# ----------------------------------------------------------------------------------------------
# Reading the YAML text


_MERGE_TAG = "tag:yaml.org,2002:merge"
_Position = tuple[int, int]  # 1-based (line, column)


def _yaml_where(mark: Any) -> str:
    return f"<yaml line {mark.line + 1}, column {mark.column + 1}>"


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with bounded nesting and bounded alias expansion.

    Aliases (``*name``) stay allowed, so a long negative prompt can be written once, but the content they
    repeat is counted (characters of scalars plus one per node, nested aliases included) and an alias that
    takes the file's total beyond :data:`MAX_ALIAS_EXPANSION` is refused, as is an alias inside its own
    anchor. Values that PyYAML cannot build (``!!int x``, a 5000-digit number) become YAML errors with a
    position instead of raw tracebacks.
    """

    def __init__(self, text: str, file: Path) -> None:
        super().__init__(text)
        self.spec_file = file
        self._depth = 0
        self._open_anchors: list[str] = []
        self._expanded = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if event.anchor in self._open_anchors:
                raise SpecError(
                    self.spec_file, _yaml_where(event.start_mark),
                    f"an alias to a finished anchor (alias '*{_key_text(event.anchor)}' is inside "
                    "the node it names)",
                    line=event.start_mark.line + 1, column=event.start_mark.column + 1,
                )
            self._expanded += self._size(node)
            if self._expanded > MAX_ALIAS_EXPANSION:
                raise SpecError(
                    self.spec_file, _yaml_where(event.start_mark),
                    f"YAML aliases that repeat at most {MAX_ALIAS_EXPANSION} characters in all (alias "
                    f"'*{_key_text(event.anchor)}' here brings the total to {self._expanded}; write "
                    "the repeated part out, or repeat less)",
                    line=event.start_mark.line + 1, column=event.start_mark.column + 1,
                )
            return node
        if self._depth >= MAX_YAML_DEPTH:
            raise SpecError(
                self.spec_file, _yaml_where(event.start_mark),
                f"at most {MAX_YAML_DEPTH} levels of nested lists and mappings",
                line=event.start_mark.line + 1, column=event.start_mark.column + 1,
            )
        self._depth += 1
        if event.anchor is not None:
            self._open_anchors.append(event.anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if event.anchor is not None:
                self._open_anchors.pop()

    def _size(self, node: Node) -> int:
        """Characters of the node's scalars plus one per node, aliases expanded (memoised per node)."""
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, ScalarNode):
                size = 1 + len(node.value)
            elif isinstance(node, SequenceNode):
                size = 1 + sum(self._size(child) for child in node.value)
            else:
                size = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
            self._sizes[key] = size
        return self._sizes[key]

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError, KeyError, IndexError) as err:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            value = quote_value(node.value, 60) if isinstance(node, ScalarNode) else "this value"
            why = f" ({err})" if isinstance(err, ValueError | OverflowError) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value} as {tag}{why}", node.start_mark
            ) from err


def _read_yaml(file: Path) -> tuple[Any, dict[str, _Position]]:
    """The file's data and the position of every field path in it (see :func:`_index_nodes`)."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError as err:
        raise SpecError(file, "<file>", "an existing YAML spec file") from err
    except OSError as err:
        raise SpecError(file, "<file>", f"a readable YAML spec file ({err.strerror or err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        column = len(raw[line_start:err.start].decode("utf-8", "replace")) + 1
        raise SpecError(
            file, f"<yaml line {line}, column {column}>", f"UTF-8 text ({err.reason})",
            raw[err.start:err.end], line=line, column=column,
        ) from err
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as Path.read_text reads it
    loader: _SpecLoader | None = None
    try:
        loader = _SpecLoader(text, file)  # the reader checks every character here
        node = loader.get_single_node()
        positions = _index_nodes(loader, node)
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
        raise SpecError(
            file, f"<yaml line {line}, column {column}>", f"well-formed YAML ({err.reason})",
            chr(err.character) if isinstance(err.character, int) else err.character, line=line, column=column,
        ) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = _yaml_where(mark) if mark else "<yaml>"
        problem = str(getattr(err, "problem", None) or err)
        if len(problem) > _QUOTE_LIMIT:
            problem = problem[:_QUOTE_LIMIT] + "…"
        raise SpecError(
            file, where, f"well-formed YAML ({problem})",
            line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None,
        ) from err
    finally:
        if loader is not None:
            loader.dispose()
    return data, positions


def _index_nodes(loader: _SpecLoader, root: Node | None) -> dict[str, _Position]:
    """Map each field path (``scenes[0].regions[1].box``) to the position where the file writes it.

    A mapping entry is at its key, a list item at the item. Refuses a key written twice in one mapping
    (PyYAML would silently keep the last value), naming the key and both lines.
    """
    positions: dict[str, _Position] = {}
    if root is None:
        return {"": (1, 1)}

    def at(node: Node) -> _Position:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def walk(node: Node, path: str) -> None:
        if isinstance(node, SequenceNode):
            for i, child in enumerate(node.value):
                child_path = f"{path}[{i}]"
                positions.setdefault(child_path, at(child))
                walk(child, child_path)
        elif isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            merged: list[Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:  # '<<: *base' keys: explicit keys win, so index them last
                    merged.extend(value_node.value if isinstance(value_node, SequenceNode) else [value_node])
                    continue
                if not isinstance(key_node, ScalarNode):
                    continue  # the constructor refuses unhashable keys with its own message
                key = loader.construct_object(key_node)
                child_path = _join(path, _key_text(key))
                if key in seen:
                    first = seen[key]
                    raise SpecError(
                        loader.spec_file, child_path,
                        f"each key once per mapping ({quote_value(key)} is written on line {at(first)[0]} "
                        f"and again on line {at(key_node)[0]})",
                        line=at(key_node)[0], column=at(key_node)[1],
                    )
                seen[key] = key_node
                positions[child_path] = at(key_node)
                walk(value_node, child_path)
            for base in merged:
                if isinstance(base, MappingNode):
                    for key_node, value_node in base.value:
                        if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                            child_path = _join(path, _key_text(loader.construct_object(key_node)))
                            if child_path not in positions:
                                positions[child_path] = at(key_node)
                                walk(value_node, child_path)

    positions[""] = at(root)
    walk(root, "")
    return positions


def _position_of(positions: Mapping[str, _Position], field_path: str) -> _Position:
    """The position of a field path, or of its nearest written parent (a missing field: its mapping)."""
    path = "" if field_path.startswith("<") else field_path
    while path not in positions and path:
        parent = re.sub(r"(\[[^\[\]]*\]|\.[^.\[\]]*)$", "", path)
        path = "" if parent == path else parent
    return positions.get(path, (1, 1))


# ----------------------------------------------------------------------------------------------
# Building the spec


def _build_spec(file: Path, data: Any, size_multiple: int) -> DatasetSpec:
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
    f = _Fields(file, "evaluation", raw, ("clip_model", "clip_weights", "classifier", "oracle"))
    values = {}
    for key, what in (
        ("clip_model", "an open_clip model name or builtin:NAME (e.g. builtin:toy-clip)"),
        ("clip_weights", "a CLIP weights file (relative to the spec's folder) or builtin:NAME"),
        ("classifier", "a per-box classifier: builtin:toy-classifier or a .safetensors file"),
        ("oracle", "a renderer of perfect scene images: builtin:NAME (e.g. builtin:toy-render)"),
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
            raise SpecError(file, f"base_models.{_key_text(style)}", f"one of the styles {list(STYLES)}")
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
        if not isinstance(key, str) or not _NAME_RE.fullmatch(key):
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
                "status",
                "status_reason",
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
        status, status_reason = _load_status(f)
        scenes[sid] = Scene(
            id=sid,
            prompt=f.string("prompt") or "",
            negative_prompt=f.string("negative_prompt", default="", required=False) or "",
            width=width,
            height=height,
            regions=regions,
            seed=f.integer("seed", default=0, minimum=0, maximum=MAX_SEED,
                           maximum_why=" (2**63 - 1: a seed must fit a signed 64-bit integer)"),
            conditions=dict(conditions),
            adapter_global_weights=f.weights("adapter_global_weights"),
            image_guidance=image_guidance,
            style=style,
            status=status,
            status_reason=status_reason,
        )
    return scenes


def _load_status(f: _Fields) -> tuple[str, str]:
    status = f.data.get("status")
    status = "ok" if status is None else status
    if not isinstance(status, str) or status not in SCENE_STATUSES:
        raise SpecError(f.file, f.path("status"), f"one of {list(SCENE_STATUSES)}", status)
    reason = f.string("status_reason", required=False)
    if status == "ok" and reason is not None:
        raise SpecError(f.file, f.path("status_reason"), "no status_reason when status is 'ok'", reason)
    if status != "ok" and (reason is None or not reason.strip()):
        raise SpecError(
            f.file, f.path("status_reason"), f"a non-empty string saying why the scene is '{status}'", reason
        )
    return status, reason or ""


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
