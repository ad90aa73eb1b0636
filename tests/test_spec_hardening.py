"""Spec loading under hostile or sloppy YAML: one SpecError naming the file, the line and the field, never a
raw traceback, never a silently wrong value, and never a message that grows with the input."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch

from bench.spec import MAX_SEED, SpecError, load_spec, quote_value

REPO = Path(__file__).resolve().parents[1]

# Line numbers below refer to this text (line 1 is 'name: mini').
BASE = """\
name: mini
base_models: {real: models/sd15}
concepts:
  - id: catA
    class_name: cat
    style: real
    tokens: <catA1> <catA2>
    lora: loras/catA.pth
    references: data/catA
scenes:
  - id: pets
    prompt: a cat
    width: 128
    height: 64
    seed: 7
    regions:
      - concept: catA
        box: [0.0, 0.1, 0.5, 1.0]
        prompt: a <catA1> <catA2>
benchmarks:
  - {id: all, scenes: all, seeds: 3}
"""

ID_RULE = "an id of letters, digits, '_', '-', '.', '+' that starts with a letter or digit (at most 128 characters)"
KNOWN_SCENE_KEYS = (
    "['id', 'prompt', 'negative_prompt', 'width', 'height', 'regions', 'seed', 'conditions', "
    "'adapter_global_weights', 'image_guidance', 'style', 'status', 'status_reason']"
)


def _laughs(levels: int) -> str:
    """A 'billion laughs' document: each level lists the previous one 9 times."""
    text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, levels + 1):
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n"
    return text


def _deep_block(levels: int) -> str:
    return "deep:\n" + "".join("  " * i + "-\n" for i in range(1, levels + 1))


def _edit(old: str, new: str | bytes) -> bytes:
    assert BASE.count(old) == 1, old
    head, tail = BASE.encode().split(old.encode())
    return head + (new if isinstance(new, bytes) else new.encode()) + tail


def _write(tmp_path: Path, content: str | bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _error(tmp_path: Path, content: str | bytes) -> tuple[Path, SpecError]:
    path = _write(tmp_path, content)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return path, info.value


def test_base_loads(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, BASE))
    assert spec.scenes["pets"].seed == 7 and spec.scenes["pets"].status == "ok"


# input -> the exact message after "{file}: "
BAD_INPUT = [
    # -- keys written twice: refused, naming the key and both lines (PyYAML alone keeps the last value)
    ("duplicate-width", _edit("    width: 128\n", "    width: 128\n    width: 256\n"),
     "line 14, column 5: field 'scenes[0].width': expected each key once per mapping "
     "('width' is written on line 13 and again on line 14)"),
    ("duplicate-box",
     _edit("        prompt: a <catA1>", "        box: [0.5, 0.1, 1.0, 1.0]\n        prompt: a <catA1>"),
     "line 19, column 9: field 'scenes[0].regions[0].box': expected each key once per mapping "
     "('box' is written on line 18 and again on line 19)"),
    ("duplicate-quoted-key", _edit("    seed: 7\n", "    seed: 7\n    \"seed\": 8\n"),
     "line 16, column 5: field 'scenes[0].seed': expected each key once per mapping "
     "('seed' is written on line 15 and again on line 16)"),
    ("duplicate-in-flow-mapping", _edit("seeds: 3}", "seeds: 3, seeds: 4}"),
     "line 21, column 38: field 'benchmarks[0].seeds': expected each key once per mapping "
     "('seeds' is written on line 21 and again on line 21)"),
    ("duplicate-top-level", BASE + "name: other\n",
     "line 22, column 1: field 'name': expected each key once per mapping "
     "('name' is written on line 1 and again on line 22)"),
    # -- bytes and characters
    ("not-utf8", _edit("prompt: a cat", b"prompt: a \xff cat"),
     "field '<yaml line 12, column 15>': expected UTF-8 text (invalid start byte) (got b'\\xff')"),
    ("latin1-accent", _edit("prompt: a cat", "prompt: a café".encode("latin-1")),
     "field '<yaml line 12, column 18>': expected UTF-8 text (invalid continuation byte) (got b'\\xe9')"),
    ("control-character", _edit("prompt: a cat", "prompt: a \x07 cat"),
     "field '<yaml line 12, column 15>': expected well-formed YAML (special characters are not allowed) "
     "(got '\\x07')"),
    # -- nesting and aliases
    ("5000-deep-flow", _edit("prompt: a cat", "prompt: " + "[" * 5000 + "]" * 5000),
     "field '<yaml line 12, column 74>': expected at most 64 levels of nested lists and mappings"),
    ("5000-deep-block", BASE + _deep_block(5000),
     "field '<yaml line 86, column 129>': expected at most 64 levels of nested lists and mappings"),
    ("billion-laughs", BASE + _laughs(9),
     "field '<yaml line 26, column 50>': expected YAML aliases that repeat at most 250000 characters in all "
     "(alias '*l3' here brings the total to 273978; write the repeated part out, or repeat less)"),
    ("recursive-alias", BASE + "loop: &loop [a, *loop]\n",
     "field '<yaml line 22, column 17>': expected an alias to a finished anchor "
     "(alias '*loop' is inside the node it names)"),
    ("undefined-alias", _edit("seed: 7", "seed: *nope"),
     "field '<yaml line 15, column 11>': expected well-formed YAML (found undefined alias 'nope')"),
    ("unreadable-timestamp", _edit("seed: 7", "seed: !!timestamp soon"),
     "field '<yaml line 15, column 11>': expected well-formed YAML (cannot read 'soon' as !!timestamp)"),
    ("5000-digit-number", _edit("seed: 7", "seed: " + "9" * 5000),
     "field '<yaml line 15, column 11>': expected well-formed YAML (cannot read '" + "9" * 59
     + "… (str of 5000 characters) as !!int (Exceeds the limit (4300 digits) for integer string conversion: "
     "value has 5000 digits; use s…)"),
    ("two-documents", BASE + "---\nname: other\n",
     "field '<yaml line 22, column 1>': expected well-formed YAML (but found another document)"),
    # -- the quoted value is capped, with its type and length
    ("long-value", _edit("seed: 7", "seed: " + "x" * 5000),
     "line 15, column 5: field 'scenes[0].seed': expected an integer (got '" + "x" * 199
     + "… (str of 5000 characters))"),
    ("long-unknown-key", _edit("    seed: 7\n", "    seed: 7\n    " + "k" * 1000 + ": 1\n"),
     "line 16, column 5: field 'scenes[0]." + "k" * 80 + "…': expected one of the known keys " + KNOWN_SCENE_KEYS),
    # -- ids: no path tricks
    ("scene-id-dotdot", _edit("  - id: pets", "  - id: .."),
     f"line 11, column 5: field 'scenes[0].id': expected {ID_RULE} (got '..')"),
    ("scene-id-dot", _edit("  - id: pets", "  - id: '.'"),
     f"line 11, column 5: field 'scenes[0].id': expected {ID_RULE} (got '.')"),
    ("scene-id-hidden", _edit("  - id: pets", "  - id: .pets"),
     f"line 11, column 5: field 'scenes[0].id': expected {ID_RULE} (got '.pets')"),
    ("scene-id-slash", _edit("  - id: pets", "  - id: ../../etc"),
     f"line 11, column 5: field 'scenes[0].id': expected {ID_RULE} (got '../../etc')"),
    ("concept-id-leading-dash", _edit("  - id: catA", "  - id: -catA"),
     f"line 4, column 5: field 'concepts[0].id': expected {ID_RULE} (got '-catA')"),
    ("benchmark-id-backslash", _edit("{id: all,", "{id: 'a\\b',"),
     f"line 21, column 6: field 'benchmarks[0].id': expected {ID_RULE} (got 'a\\\\b')"),
    ("name-trailing-newline", _edit("name: mini", 'name: "mini\\n"'),
     f"line 1, column 1: field 'name': expected {ID_RULE} (got 'mini\\n')"),
    ("name-too-long", _edit("name: mini", "name: " + "m" * 129),
     f"line 1, column 1: field 'name': expected {ID_RULE} (got '{'m' * 129}')"),
    # -- seeds every generator takes
    ("seed-2**63", _edit("seed: 7", f"seed: {2**63}"),
     "line 15, column 5: field 'scenes[0].seed': expected an integer <= 9223372036854775807 "
     "(2**63 - 1: a seed must fit a signed 64-bit integer) (got 9223372036854775808)"),
    ("seed-2**64", _edit("seed: 7", f"seed: {2**64}"),
     "line 15, column 5: field 'scenes[0].seed': expected an integer <= 9223372036854775807 "
     "(2**63 - 1: a seed must fit a signed 64-bit integer) (got 18446744073709551616)"),
    ("seed-negative", _edit("seed: 7", "seed: -1"),
     "line 15, column 5: field 'scenes[0].seed': expected an integer >= 0 (got -1)"),
    # -- scene status
    ("status-unknown", _edit("    seed: 7\n", "    seed: 7\n    status: disabled\n"),
     "line 16, column 5: field 'scenes[0].status': expected one of ['ok', 'disabled-upstream', "
     "'broken-upstream'] (got 'disabled')"),
    ("status-yaml-bool", _edit("    seed: 7\n", "    seed: 7\n    status: off\n"),
     "line 16, column 5: field 'scenes[0].status': expected one of ['ok', 'disabled-upstream', "
     "'broken-upstream'] (got False)"),
    ("status-without-reason", _edit("    seed: 7\n", "    seed: 7\n    status: broken-upstream\n"),
     "line 11, column 5: field 'scenes[0].status_reason': expected a non-empty string saying why the scene "
     "is 'broken-upstream'"),
    ("status-blank-reason",
     _edit("    seed: 7\n", "    seed: 7\n    status: disabled-upstream\n    status_reason: ' '\n"),
     "line 17, column 5: field 'scenes[0].status_reason': expected a non-empty string saying why the scene "
     "is 'disabled-upstream' (got ' ')"),
    ("reason-without-status", _edit("    seed: 7\n", "    seed: 7\n    status_reason: old news\n"),
     "line 16, column 5: field 'scenes[0].status_reason': expected no status_reason when status is 'ok' "
     "(got 'old news')"),
    # -- every other field error now carries its line too (a missing field: the line of its mapping)
    ("width-not-multiple", _edit("width: 128", "width: 100"),
     "line 13, column 5: field 'scenes[0].width': expected a multiple of 8 pixels (got 100)"),
    ("missing-prompt", _edit("    prompt: a cat\n", ""),
     "line 11, column 5: field 'scenes[0].prompt': expected a string (required field is missing)"),
    ("bad-box", _edit("box: [0.0, 0.1, 0.5, 1.0]", "box: [0.0, 0.1, 1.5, 1.0]"),
     "line 18, column 9: field 'scenes[0].regions[0].box': expected a box [x0, y0, x1, y1] of 4 numbers in "
     "[0, 1] with x0 < x1 and y0 < y1 (a coordinate lies outside [0, 1]) (got [0.0, 0.1, 1.5, 1.0])"),
    ("mixed-key-types", _edit("    seed: 7\n", "    seed: 7\n    1: one\n    zz: two\n"),
     "line 16, column 5: field 'scenes[0].1': expected one of the known keys " + KNOWN_SCENE_KEYS),
    ("empty-file", "", "line 1, column 1: field '<top>': expected a mapping (got 'NoneType')"),
]


@pytest.mark.parametrize(("content", "message"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_table(tmp_path: Path, content: str | bytes, message: str) -> None:
    path, err = _error(tmp_path, content)
    assert str(err) == f"{path}: {message}"
    assert err.line is not None and err.column is not None, "every load error names the YAML line"


def test_alias_bomb_is_refused_fast_and_the_message_stays_small(tmp_path: Path) -> None:
    start = time.monotonic()
    _, err = _error(tmp_path, BASE + _laughs(12))
    assert time.monotonic() - start < 5 and len(str(err)) < 400
    assert "aliases" in err.expected and "'*l3'" in err.expected and err.line == 26


def test_allowed_aliases_still_quote_a_bounded_value(tmp_path: Path) -> None:
    # These aliases repeat ~12k characters: within the bound, so the value reaches validation, whose
    # message quotes it cut short (today's code printed the whole expansion).
    lols = "[" + ", ".join(["lol"] * 9) + "]"
    name = f"[&l0 {lols}, &l1 [{', '.join(['*l0'] * 9)}], &l2 [{', '.join(['*l1'] * 9)}], *l2, *l2, *l2]"
    path, err = _error(tmp_path, BASE.replace("name: mini", f"name: {name}"))
    assert err.field_path == "name" and len(str(err)) < 500
    assert str(err).endswith("… (list of 6 items))") and err.line == 1


def test_scalar_collection_and_merge_aliases_still_work(tmp_path: Path) -> None:
    text = BASE.replace("    prompt: a cat\n", "    prompt: &p a cat\n    negative_prompt: *p\n")
    text = text.replace("    regions:\n", "    regions: &regions\n")
    text = text.replace(
        "benchmarks:\n",
        "  - {id: pets2, prompt: *p, width: 128, height: 64, regions: *regions}\nbenchmarks:\n",
    )
    spec = load_spec(_write(tmp_path, text))
    assert spec.scenes["pets"].negative_prompt == "a cat" and spec.scenes["pets2"].prompt == "a cat"
    assert spec.scenes["pets2"].regions == spec.scenes["pets"].regions
    # '<<' merge keys: explicit keys win and are not duplicates of merged ones
    merged = BASE.replace("    seed: 7\n", "    seed: 7\n    <<: {seed: 9, negative_prompt: merged}\n")
    spec = load_spec(_write(tmp_path, merged, "merged.yaml"))
    assert spec.scenes["pets"].seed == 7 and spec.scenes["pets"].negative_prompt == "merged"


def test_the_shipped_specs_load_with_their_aliases_and_ids() -> None:
    for path in sorted((REPO / "datasets").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.scenes and all(sid == spec.scenes[sid].id for sid in spec.scenes)
    paper = load_spec(REPO / "datasets" / "paper.yaml")
    assert {"5anime_2", "potter+hermione+rock_background", "2dog+1cat"} <= set(paper.scenes)
    assert paper.scenes["3girl"].negative_prompt.startswith("longbody")  # written once, aliased 90 times


@pytest.mark.parametrize("good", ["5anime_2", "potter+hermione+rock_background", "2dog+1cat", "v1.5", "a..b",
                                  "A-1_b+c", "x" * 128])
def test_good_ids(tmp_path: Path, good: str) -> None:
    spec = load_spec(_write(tmp_path, BASE.replace("  - id: pets", f"  - id: '{good}'")))
    assert list(spec.scenes) == [good]


def test_the_largest_seed_loads_and_every_generator_takes_it(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, BASE.replace("seed: 7", f"seed: {MAX_SEED}")))
    seed = spec.scenes["pets"].seed
    assert seed == 2**63 - 1
    torch.Generator("cpu").manual_seed(seed + 1000)  # the 'offset' scheme adds the seed index
    random.Random(seed).randint(1, 20000)


def test_quote_value_is_bounded_for_a_shared_reference_bomb() -> None:
    bomb: list = ["lol"] * 9
    for _ in range(30):  # 9**30 leaves if printed in full
        bomb = [bomb] * 9
    start = time.monotonic()
    text = quote_value(bomb)
    assert time.monotonic() - start < 1 and len(text) < 260 and text.endswith("… (list of 9 items)")
    assert quote_value("short") == "'short'" and quote_value({"a": [1, (2,)]}) == "{'a': [1, (2,)]}"
    assert quote_value(10**5000) == "<int too large to print>"
    assert quote_value(10**4000).endswith("… (int)")
    err = SpecError("f.yaml", "x", "something", "y" * 10_000)
    assert len(str(err)) < 300 and err.got == "y" * 10_000


def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="expected a readable YAML spec file") as info:
        load_spec(tmp_path)
    assert info.value.field_path == "<file>"
