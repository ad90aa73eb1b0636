"""Scene status: layouts that upstream's main scripts disable or cannot run are data, not comments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.spec import SCENE_STATUSES, SpecError, load_spec

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "datasets" / "paper.yaml"

SPEC = """\
name: mini
concepts:
  - {id: catA, class_name: cat, style: real, tokens: <catA1>, lora: l.pth, references: r}
scenes:
  - {id: one, prompt: p, width: 64, height: 64, regions: [{concept: catA, box: [0, 0, 1, 1], prompt: <catA1>}]}
  - {id: two, prompt: p, width: 64, height: 64, regions: [], status: disabled-upstream,
     status_reason: its flag is 0}
  - {id: three, prompt: p, width: 64, height: 64, regions: [], status: broken-upstream,
     status_reason: the script stops early}
  - {id: four, prompt: p, width: 64, height: 64, regions: [], status: ok}
"""


@pytest.fixture
def spec(tmp_path: Path):
    path = tmp_path / "mini.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def test_status_loads_with_ok_as_default(spec) -> None:
    assert SCENE_STATUSES == ("ok", "disabled-upstream", "broken-upstream")
    assert [(s.status, s.status_reason) for s in spec.scenes.values()] == [
        ("ok", ""), ("disabled-upstream", "its flag is 0"), ("broken-upstream", "the script stops early"), ("ok", "")
    ]


def test_runnable_scenes(spec) -> None:
    assert spec.runnable_scenes() == ["one", "four"]
    assert spec.runnable_scenes(include_disabled=True) == ["one", "two", "three", "four"]
    assert spec.runnable_scenes(["four", "three", "two"]) == ["four"]  # the caller's order is kept
    assert spec.runnable_scenes(("three", "one"), include_disabled=True) == ["three", "one"]
    assert spec.runnable_scenes([]) == []
    with pytest.raises(SpecError, match=r"field 'scenes': expected scene ids defined in 'scenes' .*\(got 'zoo'\)"):
        spec.runnable_scenes(["one", "zoo"])


def test_status_is_not_part_of_the_spec_hash(tmp_path: Path, spec) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text(re.sub(r", status: [^,}]+(,\s*status_reason: [^}]+)?", "", SPEC))
    bare = load_spec(plain)
    assert all(s.status == "ok" for s in bare.scenes.values())
    assert bare.spec_hash() == spec.spec_hash()


def test_paper_statuses_follow_upstream_main() -> None:
    paper = load_spec(PAPER)
    statuses = {sid: s.status for sid, s in paper.scenes.items() if s.status != "ok"}
    assert statuses == {
        "3girl2": "broken-upstream",
        "potter+hermione+rock_background": "disabled-upstream",
        "2real": "disabled-upstream",
        "2real2": "disabled-upstream",
    }
    assert all(paper.scenes[sid].status_reason for sid in statuses)
    assert "main@a48a5a5" in paper.scenes["2real"].status_reason
    assert "'\\'" in paper.scenes["3girl2"].status_reason  # the missing line continuation
    runnable = paper.runnable_scenes()
    assert len(runnable) == len(paper.scenes) - 4 and "4real" in runnable and "5real" in runnable
    # Every layout stays in the benchmarks; only the runner's default selection skips the non-ok ones.
    assert set(paper.benchmarks["paper"].scenes) == set(paper.scenes)


def test_paper_comments_no_longer_call_enabled_layouts_disabled() -> None:
    text = PAPER.read_text()
    assert "DISABLED" not in text and "BROKEN" not in text
    # The optimized_version flags are still documented, as that branch's, next to the layouts they concern.
    comments = {m.group(2): m.group(1) for m in re.finditer(r'((?:  #[^\n]*\n)*)  - id: "([^"]+)"', text)}
    opt_only = {"potter+hermione+pyramid_background+shake_hands", "2dog+1cat", "5real", "5real2", "5real3",
                "3real", "4real2", "4real3"}
    assert opt_only < set(comments)
    for sid in opt_only:
        assert "Runs in upstream main@a48a5a5" in comments[sid] and "optimized_version" in comments[sid], sid
    for sid in ("potter+hermione+rock_background", "2real", "2real2"):
        assert comments[sid].startswith("  # Disabled upstream: enable flag 0 in main@a48a5a5"), sid


def test_paper_hash_is_unchanged_by_the_status_fields(tmp_path: Path) -> None:
    stripped = re.sub(r"\n    status(_reason)?: [^\n]*", "", PAPER.read_text())
    copy = tmp_path / "paper.yaml"
    copy.write_text(stripped)
    bare = load_spec(copy)
    assert all(s.status == "ok" for s in bare.scenes.values())
    assert bare.spec_hash() == load_spec(PAPER).spec_hash()
