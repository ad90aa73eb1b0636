"""The `bench` command line: list, check-assets, cones2-train, and argument errors."""

from __future__ import annotations

import pytest
import torch

from lcbench.cli import main


def test_list_shows_methods_datasets_metrics(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("lora-merge", "lora-composer", "paint-by-example", "cones2", "random", "paper", "clip_i"):
        assert name in out
    assert "anydoor" in out and "unavailable" in out


def test_check_assets_lists_exactly_what_is_missing(tmp_path, capsys):
    (tmp_path / "loras" / "real").mkdir(parents=True)
    (tmp_path / "loras" / "real" / "catA.pth").write_bytes(b"x")
    assert main(["check-assets", "--dataset", "paper", "--assets", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert str(tmp_path / "loras" / "real" / "hinton.pth") in out
    assert str(tmp_path / "experiments" / "pretrained_models" / "chilloutmix") in out
    cat_a = next(line for line in out.splitlines() if line.endswith(str(tmp_path / "loras" / "real" / "catA.pth")))
    assert "refused" in cat_a and "missing" not in cat_a  # present but not a LoRA: opened, not only looked for


def test_check_assets_on_the_tiny_dataset_is_complete(capsys):
    assert main(["check-assets", "--dataset", "random"]) == 0
    assert "every asset is present" in capsys.readouterr().out


def test_cones2_train_writes_a_residual(tmp_path, capsys):
    out = tmp_path / "cat.pt"
    assert main(["cones2-train", "--concept", "cat", "--steps", "1", "--out", str(out)]) == 0
    residual = torch.load(out, weights_only=True)
    assert residual.ndim == 2 and torch.isfinite(residual).all()


def test_malformed_param_and_unknown_dataset(tmp_path, capsys):
    assert main(["run", "--param", "steps=3", "--out", str(tmp_path / "r")]) == 2
    assert "METHOD.KEY=VALUE" in capsys.readouterr().err
    assert main(["run", "--dataset", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_zero_seeds_and_missing_run_folders_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--seeds", "0", "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert "expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["dashboard", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["study", "create", str(tmp_path / "nope"), "--out", str(tmp_path / "study")]) == 2
    assert not (tmp_path / "study").exists()
