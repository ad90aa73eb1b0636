"""The measurement scripts the README quotes read the run's files as the bench writes them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_confusion(run: Path, method: str, rows: list[tuple[str, str, float]]) -> None:
    folder = run / "scores" / "confusion" / "items" / method / "two"
    folder.mkdir(parents=True)
    record = {"rows": [{"concept": c, "predicted": p, "region": i, "value": v} for i, (c, p, v) in enumerate(rows)]}
    (folder / "000.json").write_text(json.dumps(record))


def test_confusion_breakdown_tells_a_neighbours_colour_from_the_own_colour_in_another_shape(tmp_path: Path) -> None:
    breakdown = _script("confusion_breakdown")
    concepts = [{"id": "ruby", "attributes": {"shape": "circle", "colour": "red"}},
                {"id": "jade", "attributes": {"shape": "square", "colour": "green"}}]
    (tmp_path / "spec.json").write_text(json.dumps({"concepts": concepts}))
    _write_confusion(tmp_path, "m", [("ruby", "green dotted circle", 1.0),    # jade's colour leaked into ruby's box
                                     ("jade", "green dotted circle", 1.0),    # jade's colour, ruby's round shape
                                     ("jade", "green dotted square", 0.0),
                                     ("ruby", "none", 0.0)])
    boxes, kinds = breakdown.breakdown(tmp_path, "m")
    assert boxes == 4
    assert kinds == {breakdown.OTHER_COLOUR: 1, breakdown.OWN_COLOUR: 1}


def test_compare_methods_applies_the_calibration_rule_between_two_rows(tmp_path: Path, capsys) -> None:
    from test_reports import _synthetic_run

    compare = _script("compare_methods")
    run = _synthetic_run(tmp_path, refs=True)  # per-seed means: oracle 0.90 / 0.91, swapped 0.60 / 0.61
    assert compare.main([str(run), "--a", "ref-oracle", "--b", "ref-swapped", "--metrics", "clip_i"]) == 0
    line = capsys.readouterr().out
    assert "gap 0.3," in line and "needs 0.0212" in line and "ahead" in line  # 3 * std of (0.90, 0.91)
    assert compare.main([str(run), "--a", "ref-swapped", "--b", "ref-oracle", "--metrics", "clip_i"]) == 1
    assert "NOT ahead" in capsys.readouterr().out
