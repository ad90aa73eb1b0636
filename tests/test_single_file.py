"""Single-file (LDM layout) base models: offline round trip, unsafe .ckpt refusal, shipped SD1.5 configs."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from ldm_keys import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, pipeline_to_ldm, unet_to_ldm, vae_to_ldm
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from bench.configs import sd15_config_dir, shipped_configs
from bench.models import ModelError
from bench.pipelines import load_base_model
from bench.tokenizer import build_clip_tokenizer
from randomworld.models import build_random_pipeline

UNPICKLED: list[str] = []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny pipeline, its LDM state dict, and a weight-free diffusers config folder for it."""
    pipe = build_random_pipeline()
    root = tmp_path_factory.mktemp("single_file")
    pipe.save_pretrained(root / "config")
    for weights in (root / "config").rglob("*.safetensors"):
        weights.unlink()
    return {"pipe": pipe, "ldm": pipeline_to_ldm(pipe), "config": root / "config", "root": root}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket connection attempt fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _outputs(pipe) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=gen)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    ids = pipe.tokenizer(["a photo of a dog"], padding="max_length", max_length=77, return_tensors="pt")
    ids = ids.input_ids
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0]
        return {
            "text": text,
            "unet": pipe.unet(latents, 10, encoder_hidden_states=text).sample,
            "decode": pipe.vae.decode(latents).sample,
            "encode": pipe.vae.encode(image).latent_dist.mean,
        }


def test_ldm_helper_is_the_inverse_of_diffusers_conversion(tiny):
    pipe, ldm = tiny["pipe"], tiny["ldm"]
    assert all(k.startswith((UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)) for k in ldm)
    assert any(".mid.attn_1.q.weight" in k and ldm[k].ndim == 4 for k in ldm)  # LDM VAE attention is 1x1 conv
    clip = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()}
    pairs = (
        (convert_ldm_unet_checkpoint(ldm, pipe.unet.config), pipe.unet.state_dict()),
        (convert_ldm_vae_checkpoint(ldm, pipe.vae.config), pipe.vae.state_dict()),
        (clip, pipe.text_encoder.state_dict()),
    )
    for converted, reference in pairs:
        assert set(converted) == set(reference)
        assert all(torch.equal(converted[k], reference[k]) for k in reference)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_round_trip_offline(tiny, suffix, no_network):
    path = tiny["root"] / f"tiny{suffix}"
    if suffix == ".safetensors":
        save_file(tiny["ldm"], path)
    else:
        torch.save({"state_dict": tiny["ldm"], "global_step": 1}, path)
    loaded = load_base_model(str(path), single_file_config=tiny["config"])
    for name in ("unet", "vae", "text_encoder"):
        want, have = getattr(tiny["pipe"], name).state_dict(), getattr(loaded, name).state_dict()
        assert set(want) == set(have) and all(torch.equal(want[k], have[k]) for k in want), name
    # same weights; kernels may round differently on mmap'd storage, hence a float32-noise tolerance
    expected, got = _outputs(tiny["pipe"]), _outputs(loaded)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5, msg=name)
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"


def _record_unpickle() -> dict:
    UNPICKLED.append("ran")
    return {}


class _Payload:
    def __reduce__(self) -> tuple:
        return (_record_unpickle, ())


def test_ckpt_with_pickled_code_is_refused_without_running_it(tiny, tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": tiny["ldm"], "extra": _Payload()}, path)
    with pytest.raises(ModelError) as err:
        load_base_model(str(path), where="spec.yaml: base_models.real", single_file_config=tiny["config"])
    assert str(path) in str(err.value) and "base_models.real" in str(err.value)
    assert "pickled" in str(err.value) and ".safetensors" in str(err.value)
    assert UNPICKLED == []


def test_bad_single_file_config_is_named(tiny, tmp_path):
    path = tiny["root"] / "tiny_cfg.safetensors"
    save_file(tiny["ldm"], path)
    with pytest.raises(ModelError, match="single_file_config .*model_index.json"):
        load_base_model(str(path), single_file_config=tmp_path / "missing")


def test_default_config_is_the_shipped_sd15_and_stays_offline(tiny, no_network):
    path = tiny["root"] / "tiny_default.safetensors"
    save_file(tiny["ldm"], path)
    with pytest.raises(ModelError) as err:  # tiny widths do not fit SD1.5's configs
        load_base_model(str(path), where="base_models.real")
    message = str(err.value)
    assert str(path) in message and str(sd15_config_dir()) in message and "single_file_config" in message
    assert "768" in message  # the SD1.5 text width was used


def test_shipped_sd15_configs_are_complete():
    folder = sd15_config_dir()
    shipped = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert {
        "model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
        "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
    } <= shipped
    index = json.loads(shipped_configs().joinpath("model_index.json").read_text())
    assert index["unet"][1] == "UNet2DConditionModel" and index["text_encoder"][1] == "CLIPTextModel"
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder, subfolder="unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
    # the published parameter counts of SD1.5's UNet, VAE and CLIP ViT-L/14 text encoder
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text)]
    assert counts == [859_520_964, 83_653_863, 123_060_480]
    assert len([n for n in unet.attn_processors if n.endswith("attn2.processor")]) == 16
    assert vae.config.scaling_factor == 0.18215 and unet.config.attention_head_dim == 8
    assert text.config.hidden_act == "quick_gelu" and text.config.max_position_embeddings == 77
    # the SD1.5 LDM key layout converts to exactly these modules
    assert set(convert_ldm_unet_checkpoint(unet_to_ldm(unet), unet.config)) == set(unet.state_dict())
    assert set(convert_ldm_vae_checkpoint(vae_to_ldm(vae), vae.config)) == set(vae.state_dict())
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    reference = build_clip_tokenizer()
    prompts = ["a photo of a <sks> dog, café", "x " * 100]
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    kwargs = dict(padding="max_length", truncation=True, max_length=77)
    assert tokenizer(prompts, **kwargs).input_ids == reference(prompts, **kwargs).input_ids
