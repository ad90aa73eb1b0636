"""Base-model loading: built-in, diffusers folder, single file, and the offline hub-id error."""

from __future__ import annotations

import torch

from bench.models import ModelError
from bench.pipelines import load_base_model
from randomworld.models import build_random_pipeline


def _unet_out(pipe) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    ctx = torch.randn(1, 77, pipe.text_encoder.config.hidden_size)
    with torch.no_grad():
        return pipe.unet(x, 10, encoder_hidden_states=ctx).sample


def test_builtin_is_deterministic_and_has_16_cross_attention_layers():
    a, b = load_base_model("builtin:random-sd"), load_base_model("builtin:random-sd")
    assert torch.equal(_unet_out(a), _unet_out(b))
    cross = [n for n in a.unet.attn_processors if "attn2" in n]
    assert len(cross) == 16


def test_diffusers_folder_round_trip(tmp_path):
    pipe = build_random_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    loaded = load_base_model(str(tmp_path / "model"))
    assert torch.allclose(_unet_out(pipe), _unet_out(loaded), atol=1e-6)
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"


def test_hub_id_offline_fails_at_once_with_instructions():
    import time

    start = time.perf_counter()
    try:
        load_base_model("windwhinny/chilloutmix", where="datasets/x.yaml: base_models.real")
    except ModelError as err:
        message = str(err)
    else:
        raise AssertionError("a hub id must be refused")
    assert time.perf_counter() - start < 2
    assert "base_models.real" in message and "hub id" in message and "--local-dir" in message


def test_missing_path_and_wrong_suffix_are_clear(tmp_path):
    for ref, expected in ((str(tmp_path / "nope"), "does not exist"), (str(tmp_path), "model_index.json")):
        try:
            load_base_model(ref)
        except ModelError as err:
            assert expected in str(err)
        else:
            raise AssertionError(ref)
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"0")
    try:
        load_base_model(str(bad))
    except ModelError as err:
        assert ".safetensors" in str(err) and "'.bin'" in str(err)
    else:
        raise AssertionError("wrong suffix must be refused")
