"""Bad input to `bench run`: one clear error naming the file and field, and nothing generated."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from lcbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def run(spec: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code = main(["--quiet", "run", "--methods", "lora-merge", "--dataset", str(spec), "--out", str(out),
                 "--scenes", "cat_dog", "--param", "lora-merge.steps=1", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not (out / "items").exists()
    return err


def test_missing_lora_is_named_before_any_image(dataset, tmp_path, capsys):
    spec, assets = dataset
    (assets / "loras" / "cat.pth").unlink()
    err = run(spec, tmp_path / "run", capsys)
    assert "concepts[cat].lora" in err and str(assets / "loras" / "cat.pth") in err
    assert "Nothing was generated" in err or "nothing was generated" in err


def test_missing_reference_folder_is_named(dataset, tmp_path, capsys):
    spec, assets = dataset
    shutil.rmtree(assets / "data" / "dog" / "image")
    err = run(spec, tmp_path / "run", capsys)
    assert "concepts[dog].references" in err and str(assets / "data" / "dog" / "image") in err


def test_missing_base_model_is_named(dataset, tmp_path, capsys):
    spec, _ = dataset
    data = yaml.safe_load(spec.read_text())
    data["base_models"]["real"] = str(tmp_path / "no-such-model")
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    err = run(spec, tmp_path / "run", capsys)
    assert "base_models" in err and str(tmp_path / "no-such-model") in err


def test_hub_id_base_model_fails_at_once_offline(dataset, tmp_path, capsys):
    spec, _ = dataset
    data = yaml.safe_load(spec.read_text())
    data["base_models"]["real"] = "runwayml/stable-diffusion-v1-5"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    err = run(spec, tmp_path / "run", capsys)
    assert "hub id" in err and "base_models.real" in err and "--local-dir" in err


def test_lora_that_does_not_fit_the_base_model(dataset, tmp_path, capsys):
    spec, assets = dataset
    path = assets / "loras" / "cat.pth"
    data = torch.load(path, weights_only=True)
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k_lora.down.weight"
    data["params"]["unet"][key] = torch.zeros(4, 77)
    torch.save(data, path)
    err = run(spec, tmp_path / "run", capsys)
    assert str(path) in err and "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k" in err
    assert "77" in err


def test_pth_carrying_pickled_code_is_refused(dataset, tmp_path, capsys):
    spec, assets = dataset
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"params": Payload()}, assets / "loras" / "cat.pth")
    err = run(spec, tmp_path / "run", capsys)
    assert "weights_only" in err and str(assets / "loras" / "cat.pth") in err
    assert "it carries pickled code" in err and "convert it to .safetensors with a tool you trust" in err
    assert "set to `False`" not in err and "Re-running" not in err  # never torch's advice to load it unsafely
    assert err.count("\n") == 1  # one line
    assert not marker.exists()
