"""LoRA files of every supported layout load into the canonical form and apply like the reference does."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from transformers.utils import logging as hf_logging

from bench.lora import (
    ConceptLora,
    LoraDelta,
    LoraError,
    check_lora_fits,
    load_lora,
    lora_merged,
    lora_switcher,
    low_rank_delta,
    merge_lora_weights,
)
from bench.lora.formats import kohya_to_module
from randomworld.models import RANDOM_TEXT_DIM, build_random_pipeline

hf_logging.set_verbosity_error()  # transformers' misleading "LOAD REPORT" when peft loads text-encoder LoRAs

BLOCK = "down_blocks.1.attentions.0.transformer_blocks.0"
UP_BLOCK = "up_blocks.3.attentions.2.transformer_blocks.0"


@pytest.fixture(scope="module")
def base() -> StableDiffusionPipeline:
    return build_random_pipeline(0)


@pytest.fixture(scope="module")
def base_outputs(base: StableDiffusionPipeline) -> tuple[torch.Tensor, torch.Tensor]:
    return _outputs(base)


def _outputs(pipe: StableDiffusionPipeline) -> tuple[torch.Tensor, torch.Tensor]:
    """UNet and text-encoder outputs on fixed inputs."""
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 77, RANDOM_TEXT_DIM, generator=g)
    ids = pipe.tokenizer(
        "a photo of a cat", padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return pipe.unet(sample, 10, context).sample, pipe.text_encoder(ids)[0]


def _copy_models(base: StableDiffusionPipeline) -> StableDiffusionPipeline:
    """A pipeline with its own UNet and text encoder (the rest shared): cheaper than a deepcopy."""
    return StableDiffusionPipeline(
        vae=base.vae,
        text_encoder=copy.deepcopy(base.text_encoder),
        tokenizer=base.tokenizer,
        unet=copy.deepcopy(base.unet),
        scheduler=base.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _check_against_reference(
    base: StableDiffusionPipeline,
    base_outputs: tuple[torch.Tensor, torch.Tensor],
    lora: ConceptLora,
    path: Path,
) -> None:
    """Merging ``lora`` gives diffusers' ``load_lora_weights(path)`` outputs, which differ from the base."""
    reference = _copy_models(base)
    reference.load_lora_weights(str(path))
    with lora_merged(base.unet, base.text_encoder, [lora], [1.0]):
        ours = _outputs(base)
    for mine, theirs, plain in zip(ours, _outputs(reference), base_outputs, strict=True):
        assert (mine - plain).abs().max() > 1e-3
        torch.testing.assert_close(mine, theirs, atol=2e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# diffusers / peft


@pytest.mark.parametrize("spelling", ["diffusers", "peft"])
def test_diffusers_file_matches_load_lora_weights(
    base: StableDiffusionPipeline,
    base_outputs: tuple[torch.Tensor, torch.Tensor],
    tmp_path: Path,
    spelling: str,
) -> None:
    src = _copy_models(base)
    torch.manual_seed(1)
    unet_cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        alpha_pattern={"attn2.to_k": 2},
    )
    te_cfg = LoraConfig(
        r=2, lora_alpha=6, init_lora_weights=False, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]
    )
    src.unet.add_adapter(unet_cfg)
    src.text_encoder.add_adapter(te_cfg)
    unet_sd, te_sd = get_peft_model_state_dict(src.unet), get_peft_model_state_dict(src.text_encoder)
    if spelling == "diffusers":
        unet_sd, te_sd = convert_state_dict_to_diffusers(unet_sd), convert_state_dict_to_diffusers(te_sd)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path,
        unet_lora_layers=unet_sd,
        text_encoder_lora_layers=te_sd,
        safe_serialization=True,
        unet_lora_adapter_metadata=unet_cfg.to_dict(),
        text_encoder_lora_adapter_metadata=te_cfg.to_dict(),
    )
    path = tmp_path / "pytorch_lora_weights.safetensors"

    lora = load_lora(path)
    assert lora.format == "diffusers" and lora.source == str(path)
    assert len(lora.unet) == 4 * 32 and len(lora.text_encoder) == 4 * 2
    assert lora.unet[f"{BLOCK}.attn1.to_q"].scale == 2.0  # lora_alpha 8 / r 4
    assert lora.unet[f"{BLOCK}.attn2.to_k"].scale == 0.5  # alpha_pattern 2 / r 4
    assert lora.text_encoder["encoder.layers.1.self_attn.out_proj"].scale == 3.0

    _check_against_reference(base, base_outputs, lora, path)


def test_diffusers_file_without_metadata_uses_alpha_equal_rank(
    base: StableDiffusionPipeline, tmp_path: Path
) -> None:
    torch.manual_seed(2)
    key = f"unet.{BLOCK}.attn2.to_v"
    tensors = {
        f"{key}.lora_A.weight": torch.randn(3, RANDOM_TEXT_DIM),
        f"{key}.lora_B.weight": torch.randn(32, 3),
    }
    save_file(tensors, tmp_path / "plain.safetensors")
    lora = load_lora(tmp_path / "plain.safetensors")
    assert lora.unet[f"{BLOCK}.attn2.to_v"].scale == 1.0
    reference = _copy_models(base)
    reference.load_lora_weights(str(tmp_path / "plain.safetensors"))
    unet = copy.deepcopy(base.unet)
    merge_lora_weights(unet, None, [lora], [1.0])
    x = torch.randn(1, 5, RANDOM_TEXT_DIM)
    linear = f"{BLOCK}.attn2.to_v"
    torch.testing.assert_close(unet.get_submodule(linear)(x), reference.unet.get_submodule(linear)(x))


# ----------------------------------------------------------------------------------------------
# kohya


def test_kohya_to_module_names() -> None:
    assert kohya_to_module("down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q") == (
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    )
    assert kohya_to_module("mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0") == (
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0"
    )
    assert kohya_to_module("up_blocks_1_attentions_2_transformer_blocks_0_ff_net_0_proj") == (
        "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj"
    )
    assert kohya_to_module("text_model_encoder_layers_11_self_attn_q_proj") == (
        "text_model.encoder.layers.11.self_attn.q_proj"
    )
    assert kohya_to_module("text_model_encoder_layers_0_mlp_fc1") == "text_model.encoder.layers.0.mlp.fc1"


def test_kohya_file_matches_load_lora_weights(
    base: StableDiffusionPipeline, base_outputs: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    g = torch.Generator().manual_seed(3)
    rank, alpha = 4, 2.0
    tensors: dict[str, torch.Tensor] = {}

    def add(name: str, in_f: int, out_f: int, conv: bool = False) -> None:
        shape = (1, 1) if conv else ()
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, in_f, *shape, generator=g) * 0.3
        tensors[f"{name}.lora_up.weight"] = torch.randn(out_f, rank, *shape, generator=g) * 0.3
        tensors[f"{name}.alpha"] = torch.tensor(alpha)

    for blk, width in ((BLOCK, 32), (UP_BLOCK, 32), ("mid_block.attentions.0.transformer_blocks.0", 64)):
        body = "lora_unet_" + blk.replace(".", "_")
        for proj in ("to_q", "to_k", "to_v", "to_out_0"):
            in_f = RANDOM_TEXT_DIM if proj in ("to_k", "to_v") else width
            add(f"{body}_attn2_{proj}", in_f, width)
        add(f"{body}_attn1_to_q", width, width)
    add("lora_unet_down_blocks_1_attentions_0_proj_in", 32, 32, conv=True)
    for layer in range(2):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            add(f"lora_te_text_model_encoder_layers_{layer}_self_attn_{proj}", RANDOM_TEXT_DIM, RANDOM_TEXT_DIM)
    path = tmp_path / "kohya.safetensors"
    save_file(tensors, path)

    lora = load_lora(path)
    assert lora.format == "kohya"
    assert {d.scale for d in [*lora.unet.values(), *lora.text_encoder.values()]} == {alpha / rank}
    assert "down_blocks.1.attentions.0.proj_in" in lora.unet
    assert "encoder.layers.1.self_attn.v_proj" in lora.text_encoder

    _check_against_reference(base, base_outputs, lora, path)


# ----------------------------------------------------------------------------------------------
# ED-LoRA


def _edlora_params(spelling: str, seed: int = 4) -> dict[str, dict[str, torch.Tensor]]:
    """A Mix-of-Show ED-LoRA ``params`` dict, research (``_lora.down``) or main (``.lora_down``) spelling."""
    g = torch.Generator().manual_seed(seed)
    down_suffix, up_suffix = (
        ("_lora.down.weight", "_lora.up.weight")
        if spelling == "research"
        else (".lora_down.weight", ".lora_up.weight")
    )
    unet: dict[str, torch.Tensor] = {}
    for blk in (BLOCK, UP_BLOCK):
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                in_f = RANDOM_TEXT_DIM if attn == "attn2" and proj in ("to_k", "to_v") else 32
                unet[f"{blk}.{attn}.{proj}{down_suffix}"] = torch.randn(4, in_f, generator=g) * 0.3
                unet[f"{blk}.{attn}.{proj}{up_suffix}"] = torch.randn(32, 4, generator=g) * 0.3
    te: dict[str, torch.Tensor] = {}
    for layer in range(2):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            key = f"text_model.encoder.layers.{layer}.self_attn.{proj}"
            te[f"{key}{down_suffix}"] = torch.randn(4, RANDOM_TEXT_DIM, generator=g) * 0.3
            te[f"{key}{up_suffix}"] = torch.randn(RANDOM_TEXT_DIM, 4, generator=g) * 0.3
    embeddings = {
        "<catA1>": torch.randn(16, RANDOM_TEXT_DIM, generator=g),
        "<catA2>": torch.randn(16, RANDOM_TEXT_DIM),
    }
    return {"new_concept_embedding": embeddings, "text_encoder": te, "unet": unet}


def _save_edlora(params: dict[str, dict[str, torch.Tensor]], path: Path) -> Path:
    if path.suffix == ".safetensors":
        flat = {f"params.{section}.{key}": t for section, part in params.items() for key, t in part.items()}
        save_file(flat, path)
    else:
        torch.save({"params": params}, path)
    return path


def _merged_by_hand(
    base: StableDiffusionPipeline, params: dict[str, dict[str, torch.Tensor]]
) -> dict[tuple[str, str], torch.Tensor]:
    """{(section, module): W + up @ down} for every ED-LoRA pair, straight from the raw keys."""
    spellings = (("_lora.down.weight", "_lora.up.weight"), (".lora_down.weight", ".lora_up.weight"))
    expected = {}
    for section, model in (("unet", base.unet), ("text_encoder", base.text_encoder)):
        for key, down in params[section].items():
            for down_suffix, up_suffix in spellings:
                if key.endswith(down_suffix):
                    module = key.removesuffix(down_suffix)
                    up = params[section][module + up_suffix]
                    module = module.removeprefix("text_model.")
                    expected[section, module] = model.get_submodule(module).weight + up @ down
    return expected


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("spelling", ["research", "main"])
def test_edlora_merges_like_hand_merge(
    base: StableDiffusionPipeline, tmp_path: Path, spelling: str, suffix: str
) -> None:
    params = _edlora_params(spelling)
    lora = load_lora(_save_edlora(params, tmp_path / f"edlora_catA{suffix}"))
    assert lora.format == "edlora"
    assert len(lora.unet) == 16 and len(lora.text_encoder) == 8
    assert (
        f"{UP_BLOCK}.attn2.to_out.0" in lora.unet and "encoder.layers.0.self_attn.q_proj" in lora.text_encoder
    )
    assert {d.scale for d in lora.unet.values()} == {1.0}
    assert list(lora.token_embeddings) == ["<catA1>", "<catA2>"]
    assert torch.equal(lora.token_embeddings["<catA2>"], params["new_concept_embedding"]["<catA2>"])
    check_lora_fits(lora, base.unet, base.text_encoder, "concepts.catA.lora")

    expected = _merged_by_hand(base, params)
    assert len(expected) == 24
    models = {"unet": base.unet, "text_encoder": base.text_encoder}
    with lora_merged(base.unet, base.text_encoder, [lora], [1.0]):
        for (section, module), weight in expected.items():
            torch.testing.assert_close(
                models[section].get_submodule(module).weight, weight, atol=1e-6, rtol=1e-6
            )


def test_merge_weight_scales_the_delta(base: StableDiffusionPipeline) -> None:
    g = torch.Generator().manual_seed(5)
    key = f"{BLOCK}.attn2.to_k"
    delta = LoraDelta(torch.randn(2, RANDOM_TEXT_DIM, generator=g), torch.randn(32, 2, generator=g), scale=0.25)
    unet = copy.deepcopy(base.unet)
    before = unet.get_submodule(key).weight.detach().clone()
    merge_lora_weights(unet, None, [ConceptLora(unet={key: delta}, source="x")], [0.6])
    expected = before + 0.6 * 0.25 * delta.up @ delta.down
    torch.testing.assert_close(unet.get_submodule(key).weight, expected)


# ----------------------------------------------------------------------------------------------
# Refusals and errors


class _Payload:
    """Any pickled class instance is code as far as ``weights_only`` is concerned."""

    def __reduce__(self):  # noqa: ANN204
        return (_Payload, ())


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"params": {"unet": _Payload()}}, path)
    with pytest.raises(LoraError, match=r"evil\.pth.*weights_only") as info:
        load_lora(path, where="concepts.catA.lora")
    assert "concepts.catA.lora" in str(info.value)


def test_shape_mismatch_names_file_key_and_shapes(base: StableDiffusionPipeline, tmp_path: Path) -> None:
    params = _edlora_params("main")
    params["unet"][f"{BLOCK}.attn2.to_k.lora_down.weight"] = torch.randn(4, 64)
    lora = load_lora(_save_edlora(params, tmp_path / "bad_shape.pth"))
    with pytest.raises(LoraError, match=rf"bad_shape\.pth.*{BLOCK}\.attn2\.to_k.*\[rank, 32\].*\[4, 64\]"):
        check_lora_fits(lora, base.unet, base.text_encoder)
    with pytest.raises(LoraError, match=r"bad_shape\.pth"):
        merge_lora_weights(copy.deepcopy(base.unet), base.text_encoder, [lora], [1.0])


def test_unknown_module_names_file_and_key(base: StableDiffusionPipeline, tmp_path: Path) -> None:
    params = _edlora_params("research")
    params["unet"][f"{BLOCK}.attn2.to_z_lora.down.weight"] = torch.randn(4, 32)
    params["unet"][f"{BLOCK}.attn2.to_z_lora.up.weight"] = torch.randn(32, 4)
    lora = load_lora(_save_edlora(params, tmp_path / "bad_key.safetensors"))
    with pytest.raises(LoraError, match=rf"bad_key\.safetensors.*'{BLOCK}\.attn2\.to_z'.*no such module"):
        check_lora_fits(lora, base.unet, base.text_encoder)


def test_token_embedding_rows_and_dim_are_checked(base: StableDiffusionPipeline) -> None:
    wrong_rows = ConceptLora(token_embeddings={"<x>": torch.zeros(5, RANDOM_TEXT_DIM)}, source="x.pth")
    with pytest.raises(LoraError, match=r"x\.pth.*'<x>'.*1 or 16 rows.*\[5, 32\]"):
        check_lora_fits(wrong_rows, base.unet, base.text_encoder)
    wrong_dim = ConceptLora(token_embeddings={"<x>": torch.zeros(16, 768)}, source="x.pth")
    with pytest.raises(LoraError, match=r"x\.pth.*'<x>'.*\[layers, 32\]"):
        check_lora_fits(wrong_dim, base.unet, base.text_encoder)


def test_unknown_layout_missing_file_and_suffix(tmp_path: Path) -> None:
    save_file({"conv_in.weight": torch.zeros(2, 2)}, tmp_path / "model.safetensors")
    with pytest.raises(LoraError, match=r"model\.safetensors.*known LoRA layout.*conv_in\.weight"):
        load_lora(tmp_path / "model.safetensors")
    with pytest.raises(LoraError, match=r"missing\.pth.*no such file"):
        load_lora(tmp_path / "missing.pth")
    (tmp_path / "lora.ckpt").write_bytes(b"")
    with pytest.raises(LoraError, match=r"lora\.ckpt.*\.safetensors"):
        load_lora(tmp_path / "lora.ckpt")
    torch.save({"params": {"unet": {"x.lora_down.weight": torch.zeros(1, 1)}}}, tmp_path / "half.pth")
    with pytest.raises(LoraError, match=r"half\.pth.*'x'.*no up weight"):
        load_lora(tmp_path / "half.pth")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LoraError, match=r"garbage\.safetensors.*readable"):
        load_lora(tmp_path / "garbage.safetensors")


# ----------------------------------------------------------------------------------------------
# Reversible merge and the low-rank product


def test_lora_merged_restores_bit_exactly(base: StableDiffusionPipeline, tmp_path: Path) -> None:
    unet, te = base.unet, copy.deepcopy(base.text_encoder).half()
    lora = load_lora(_save_edlora(_edlora_params("main"), tmp_path / "a.pth"))
    before = {k: v.clone() for k, v in [*unet.state_dict().items(), *te.state_dict().items()]}
    with lora_merged(unet, te, [lora, lora], [0.7, 0.3]):
        changed = te.get_submodule("encoder.layers.0.self_attn.q_proj").weight
        assert not torch.equal(changed, before["encoder.layers.0.self_attn.q_proj.weight"])
    after = {**unet.state_dict(), **te.state_dict()}
    assert all(torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(RuntimeError, match="boom"), lora_merged(unet, te, [lora], [1.0]):
        raise RuntimeError("boom")
    assert all(torch.equal({**unet.state_dict(), **te.state_dict()}[k], v) for k, v in before.items())


def test_lora_switcher_gives_lora_merged_weights_bit_for_bit(base: StableDiffusionPipeline, tmp_path: Path) -> None:
    """Each ``use(k)`` equals :func:`lora_merged` with LoRA k alone; ``use(None)`` and the exit restore."""
    unet, te = base.unet, copy.deepcopy(base.text_encoder).half()
    loras = [load_lora(_save_edlora(_edlora_params("main", seed), tmp_path / f"{seed}.pth")) for seed in (4, 5)]
    weights = [0.7, 1.3]

    def state() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in [*unet.state_dict().items(), *te.state_dict().items()]}

    before = state()
    expected = []
    for lora, weight in zip(loras, weights, strict=True):
        with lora_merged(unet, te, [lora], [weight]):
            expected.append(state())
    assert any(not torch.equal(expected[0][k], expected[1][k]) for k in before)
    with lora_switcher(unet, te, loras, weights) as use:
        for k in (1, 0, 1):
            use(k)
            assert all(torch.equal(v, expected[k][name]) for name, v in state().items())
        use(None)
        assert all(torch.equal(v, before[name]) for name, v in state().items())
        use(0)
    assert all(torch.equal(v, before[name]) for name, v in state().items())
    with pytest.raises(RuntimeError, match="boom"), lora_switcher(unet, te, loras, weights) as use:
        use(1)
        raise RuntimeError("boom")
    assert all(torch.equal(v, before[name]) for name, v in state().items())


def test_low_rank_delta_equals_merged_linear_difference(base: StableDiffusionPipeline) -> None:
    g = torch.Generator().manual_seed(6)
    key = f"{BLOCK}.attn2.to_v"
    delta = LoraDelta(
        torch.randn(4, RANDOM_TEXT_DIM, generator=g).bfloat16(), torch.randn(32, 4, generator=g), 0.5
    )
    linear = copy.deepcopy(base.unet.get_submodule(key))
    x = torch.randn(2, 77, RANDOM_TEXT_DIM, generator=g)
    with torch.no_grad():
        plain = linear(x)
        merge_lora_weights(None, None, [], [])
        linear.weight += delta.weight(torch.float32)
        merged = linear(x)
    out = low_rank_delta(x, delta)
    assert out.dtype == torch.float32 and out.shape == (2, 77, 32)
    torch.testing.assert_close(plain + out, merged, atol=1e-5, rtol=1e-4)
    assert low_rank_delta(x.bfloat16(), delta).dtype == torch.bfloat16
