"""CI regression on the toy world's reference scores: main passes, a broken LoRA-Composer fails.

This reruns the committed reference's fixed subset (``reports/reference/toy.json``) with the committed
toy weights, exactly as ``bench check`` does in a user's CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lcbench.cli import main

REFERENCE = Path(__file__).resolve().parents[1] / "reports" / "reference" / "toy.json"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("check") / "run"


@pytest.mark.slow
def test_reference_check_passes_on_main(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = json.loads(REFERENCE.read_text())
    assert reference["replicates"] >= 3 and "lora-composer" in reference["values"]
    assert main(["--quiet", "check", "--reference", str(REFERENCE), "--work", str(work)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    for method in reference["values"]:
        assert method in out


@pytest.mark.slow
def test_reference_check_fails_without_concept_enhancement(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--quiet", "check", "--reference", str(REFERENCE), "--work", str(work), "--methods",
                 "lora-composer", "--param", "lora-composer.enhancement_weight=0"])
    out = capsys.readouterr().out
    assert code == 1
    failing = [line for line in out.splitlines() if "FAIL" in line and "lora-composer" in line]
    assert failing, out
    print("\n".join(failing))  # which scores left their bands (shown with pytest -rP)


@pytest.mark.slow
def test_reference_check_fails_with_the_loras_in_the_wrong_boxes(
    work: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = Path(__file__).parent / "fixtures" / "wrong_boxes_plugin.py"
    monkeypatch.setenv("LCBENCH_PLUGINS", "bench.builtin,toyworld.plugin,metrics.plugin,wrong_boxes_plugin")
    code = main(["--quiet", "--plugins", str(plugin), "check", "--reference", str(REFERENCE), "--work",
                 str(work.parent / "wrong"), "--methods", "lora-composer"])
    out = capsys.readouterr().out
    assert code == 1
    failing = [line for line in out.splitlines() if "FAIL" in line and "lora-composer" in line]
    assert failing, out
    print("\n".join(failing))  # which scores left their bands (shown with pytest -rP)
