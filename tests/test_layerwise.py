"""Layer-wise (P+ / ED-LoRA) prompt encoding and its routing to the right cross-attention layers."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0

from bench.layers import attention_level, cross_attention_layers, layer_index_of
from bench.lora import ConceptLora, LoraDelta
from bench.prompts import (
    LayerwiseAttnProcessor,
    LayerwiseState,
    LayerwiseTextEncoder,
    concept_token_ids,
    install_layerwise,
    token_positions,
)
from randomworld.models import RANDOM_TEXT_DIM

# SD1.5's 16 cross-attention layers in the order ED-LoRA / P+ number them (Mix-of-Show
# revise_edlora_unet_attention_forward: down_blocks, then mid_block, then up_blocks), written out by hand.
_T = "transformer_blocks.0.attn2"
SD15_ORDER = (
    [f"down_blocks.{b}.attentions.{a}.{_T}" for b in range(3) for a in range(2)]
    + [f"mid_block.attentions.0.{_T}"]
    + [f"up_blocks.{b}.attentions.{a}.{_T}" for b in range(1, 4) for a in range(3)]
)


def _sd_encode(pipe: StableDiffusionPipeline, prompt: str) -> torch.Tensor:
    """diffusers' own prompt encoding, [77, D]."""
    with torch.no_grad():
        return pipe.encode_prompt(prompt, "cpu", 1, False)[0][0]


# ----------------------------------------------------------------------------------------------
# Layer order and levels


def test_cross_attention_layers_follow_down_mid_up(pipe: StableDiffusionPipeline) -> None:
    layers = cross_attention_layers(pipe.unet)
    assert layers == SD15_ORDER
    processor_order = [
        n.removesuffix(".processor") for n in pipe.unet.attn_processors if ".attn2." in n + "."
    ]
    assert processor_order != SD15_ORDER  # diffusers registers up_blocks before mid_block
    assert layer_index_of(pipe.unet, "mid_block.attentions.0.transformer_blocks.0.attn2") == 6
    assert layer_index_of(pipe.unet, "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor") == 7
    with pytest.raises(KeyError, match="attn1"):
        layer_index_of(pipe.unet, "mid_block.attentions.0.transformer_blocks.0.attn1")


def test_attention_level_matches_the_real_grid(pipe: StableDiffusionPipeline) -> None:
    seen: dict[str, int] = {}
    hooks = [
        pipe.unet.get_submodule(name).register_forward_pre_hook(
            lambda mod, args, kwargs, name=name: seen.__setitem__(
                name, kwargs.get("hidden_states", args[0] if args else None).shape[1]
            ),
            with_kwargs=True,
        )
        for name in SD15_ORDER
    ]
    try:
        with torch.no_grad():
            pipe.unet(torch.randn(1, 4, 16, 8), 5, torch.randn(1, 77, RANDOM_TEXT_DIM))
    finally:
        for hook in hooks:
            hook.remove()
    levels = [attention_level(pipe.unet, name) for name in SD15_ORDER]
    assert levels == [1, 1, 2, 2, 4, 4, 8, 4, 4, 4, 2, 2, 2, 1, 1, 1]
    for name, level in zip(SD15_ORDER, levels, strict=True):
        assert seen[name] == (16 // level) * (8 // level)


# ----------------------------------------------------------------------------------------------
# The UNet side


def test_each_layer_receives_its_own_row(pipe: StableDiffusionPipeline) -> None:
    batch, layers = 2, len(SD15_ORDER)
    embeddings = torch.randn(batch, layers, 77, RANDOM_TEXT_DIM)
    received: dict[str, torch.Tensor] = {}
    hooks = [
        pipe.unet.get_submodule(f"{name}.to_k").register_forward_pre_hook(
            lambda mod, args, name=name: received.__setitem__(name, args[0])
        )
        for name in SD15_ORDER
    ]
    state = LayerwiseState(embeddings=embeddings)
    try:
        with install_layerwise(pipe.unet, state), torch.no_grad():
            attn1 = pipe.unet.attn_processors[SD15_ORDER[0].replace("attn2", "attn1") + ".processor"]
            assert isinstance(attn1, AttnProcessor2_0)
            pipe.unet(torch.randn(batch, 4, 8, 8), 5, embeddings[:, 0])
    finally:
        for hook in hooks:
            hook.remove()
    for index, name in enumerate(SD15_ORDER):
        assert torch.equal(received[name], embeddings[:, index]), name


def test_without_embeddings_it_is_plain_sdpa_and_restores(pipe: StableDiffusionPipeline) -> None:
    originals = dict(pipe.unet.attn_processors)
    sample, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, RANDOM_TEXT_DIM)
    with torch.no_grad():
        expected = pipe.unet(sample, 5, context).sample
        handle = install_layerwise(pipe.unet, LayerwiseState())
        installed = pipe.unet.attn_processors
        assert sum(isinstance(p, LayerwiseAttnProcessor) for p in installed.values()) == 16
        assert installed[f"{SD15_ORDER[6]}.processor"].layer_index == 6
        got = pipe.unet(sample, 5, context).sample
        handle.restore()
        handle.restore()
    assert torch.equal(got, expected)
    after = pipe.unet.attn_processors
    assert list(after) == list(originals) and all(after[k] is originals[k] for k in originals)


# ----------------------------------------------------------------------------------------------
# Token positions


def test_token_positions_use_the_tokenizer(pipe: StableDiffusionPipeline) -> None:
    size = len(pipe.tokenizer)
    assert token_positions(
        pipe.tokenizer, "photo of a <catA1> <catA2>, near a lake", ["<catA1>", "<catA2>"]
    ) == [4, 5]
    prompt = "a red-haired <catA1> <catA2>"
    words = prompt.split()
    assert [words.index(t) + 1 for t in ("<catA1>", "<catA2>")] == [3, 4]  # the whitespace answer is wrong
    assert token_positions(pipe.tokenizer, prompt, ["<catA1>", "<catA2>"]) == [5, 6]  # a, red, -, haired
    # only the listed tokens stay whole: the unlisted <dogB1> is five BPE pieces (<, dog, b, 1, >)
    assert token_positions(pipe.tokenizer, "<dogB1><dogB2> and <catA1>", ["<catA1>", "<dogB2>"]) == [8, 6]
    assert len(pipe.tokenizer) == size
    with pytest.raises(ValueError, match="<dogA1>"):
        token_positions(pipe.tokenizer, "a <catA1>", ["<dogA1>"])


_TOKENS = ["<catA1>", "<catA2>", "<c1>", "<c10>", "<dogB2>"]
_PROMPTS = [
    "photo of a <catA1> <catA2>, near a lake",
    "<catA1><catA2>",
    "a<catA1>b. <catA2>!!",
    "a red-haired <catA1> <catA2> and <dogB1> <dogB2>",  # <dogB1> is not listed: plain text
    "<c10> <c1> <c100> <C1>",  # longest match first, exact case
    "  <catA2>  spaces   and TABS\tand\nnewlines <catA1>",
    "über café <catA1> 日本 🙂 <|endoftext|> <catA2>",
    "",
    "a " * 80 + "<catA1> beyond the 77 tokens",
    "a " * 74 + "<catA1> <catA2>",  # the first fits, the second is cut
    "<catA1> " * 3,
]


@pytest.mark.parametrize("prompt", _PROMPTS)
def test_concept_token_ids_equal_a_tokenizer_copy_with_the_tokens_added(pipe, prompt: str) -> None:
    """The copy-free tokenization gives the ids of a copy that has the tokens added as special tokens."""
    reference = copy.deepcopy(pipe.tokenizer)  # what the encoder did before: a private copy per token set
    reference.add_tokens(_TOKENS, special_tokens=True)
    expected = reference(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    ids, marks = concept_token_ids(pipe.tokenizer, prompt, _TOKENS)
    added = {reference.convert_tokens_to_ids(t): t for t in _TOKENS}
    assert len(ids) == 77
    assert {i: added[t] for i, t in enumerate(expected) if t in added} == marks
    assert [t for i, t in enumerate(expected) if i not in marks] == [t for i, t in enumerate(ids) if i not in marks]


def test_encoding_makes_no_tokenizer_copy(pipe, monkeypatch) -> None:
    """Many concepts per image cost no tokenizer copy (a copy took 0.15-0.4 s and thrashed a cache of 8)."""
    concepts = [ConceptLora(token_embeddings={f"<k{i}a>": torch.randn(16, RANDOM_TEXT_DIM)}, source=f"k{i}")
                for i in range(12)]
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    expected = [encoder.encode(f"a <k{i}a> dog", [c]) for i, c in enumerate(concepts)]

    def no_copy(*args, **kwargs):
        raise AssertionError("a tokenizer was copied")

    monkeypatch.setattr(copy, "deepcopy", no_copy)
    for i, concept in enumerate(concepts):
        assert torch.equal(encoder.encode(f"a <k{i}a> dog", [concept]), expected[i])
        assert encoder.token_positions(f"a <k{i}a> dog", [f"<k{i}a>"]) == [2]


# ----------------------------------------------------------------------------------------------
# Prompt encoding


def test_plain_prompt_matches_diffusers_encoding(pipe: StableDiffusionPipeline) -> None:
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    out = encoder.encode("a photo of a cat near a lake")
    assert out.shape == (16, 77, RANDOM_TEXT_DIM)
    expected = _sd_encode(pipe, "a photo of a cat near a lake")
    for layer in (0, 9, 15):
        torch.testing.assert_close(out[layer], expected, atol=1e-6, rtol=1e-6)


def test_single_row_embedding_matches_a_resized_text_encoder(pipe: StableDiffusionPipeline) -> None:
    row = torch.randn(1, RANDOM_TEXT_DIM)
    concept = ConceptLora(token_embeddings={"<catA1>": row}, source="catA.pth")
    out = LayerwiseTextEncoder.from_pipeline(pipe).encode("a <catA1> cat near a lake", [concept])

    reference = copy.deepcopy(pipe)  # the textual-inversion way: new vocabulary row, resized embedding matrix
    reference.tokenizer.add_tokens(["<catA1>"], special_tokens=True)
    reference.text_encoder.resize_token_embeddings(len(reference.tokenizer))
    with torch.no_grad():
        reference.text_encoder.get_input_embeddings().weight[-1] = row[0]
    expected = _sd_encode(reference, "a <catA1> cat near a lake")
    assert torch.equal(out[0], out[15])
    torch.testing.assert_close(out[3], expected, atol=1e-6, rtol=1e-6)


def test_layerwise_embeddings_bind_row_l_into_copy_l(pipe: StableDiffusionPipeline) -> None:
    rows1, rows2 = torch.randn(16, RANDOM_TEXT_DIM), torch.randn(16, RANDOM_TEXT_DIM)
    concept = ConceptLora(token_embeddings={"<catA1>": rows1, "<catA2>": rows2}, source="catA.pth")
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    prompt = "photo of a <catA1> <catA2>, near a lake"
    out = encoder.encode(prompt, [concept])
    assert out.shape == (16, 77, RANDOM_TEXT_DIM)
    for layer in (0, 6, 15):
        single = ConceptLora(
            token_embeddings={"<catA1>": rows1[layer : layer + 1], "<catA2>": rows2[layer : layer + 1]}
        )
        torch.testing.assert_close(out[layer], encoder.encode(prompt, [single])[0], atol=1e-6, rtol=1e-6)
    # CLIP is causal: tokens before the concept are equal in every copy, tokens after it differ.
    assert torch.equal(out[0, :4], out[1, :4])
    assert not torch.allclose(out[0, 7], out[1, 7])


def test_text_lora_is_merged_for_the_call_only(pipe: StableDiffusionPipeline) -> None:
    g = torch.Generator().manual_seed(7)
    key = "encoder.layers.1.self_attn.v_proj"
    delta = LoraDelta(
        torch.randn(2, RANDOM_TEXT_DIM, generator=g), torch.randn(RANDOM_TEXT_DIM, 2, generator=g), 0.5
    )
    unet_delta = LoraDelta(torch.randn(2, 32), torch.randn(32, 2))
    text_lora = ConceptLora(
        unet={f"{SD15_ORDER[0]}.to_q": unet_delta}, text_encoder={key: delta}, source="catA.safetensors"
    )
    weights = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    unet_weight = pipe.unet.get_submodule(f"{SD15_ORDER[0]}.to_q").weight.clone()

    out = LayerwiseTextEncoder.from_pipeline(pipe).encode("a photo of a cat", text_lora=text_lora)

    reference = copy.deepcopy(pipe)
    with torch.no_grad():
        reference.text_encoder.get_submodule(key).weight += 0.5 * delta.up @ delta.down
    torch.testing.assert_close(out[2], _sd_encode(reference, "a photo of a cat"), atol=1e-6, rtol=1e-6)
    assert all(torch.equal(v, weights[k]) for k, v in pipe.text_encoder.state_dict().items())
    assert torch.equal(pipe.unet.get_submodule(f"{SD15_ORDER[0]}.to_q").weight, unet_weight)


def test_pipeline_is_left_unchanged(pipe: StableDiffusionPipeline) -> None:
    size, vocab_rows = len(pipe.tokenizer), pipe.text_encoder.get_input_embeddings().num_embeddings
    weights = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    concept = ConceptLora(token_embeddings={"<dogB1>": torch.randn(16, RANDOM_TEXT_DIM)}, source="dogB.pth")
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    encoder.encode("a <dogB1> dog", [concept])
    assert len(pipe.tokenizer) == size and "<dogB1>" not in pipe.tokenizer.get_added_vocab()
    assert pipe.text_encoder.get_input_embeddings().num_embeddings == vocab_rows
    assert not pipe.text_encoder.get_input_embeddings()._forward_hooks
    assert all(torch.equal(v, weights[k]) for k, v in pipe.text_encoder.state_dict().items())
    # without its concept the token is plain text, as for the base tokenizer, however often it was seen
    torch.testing.assert_close(encoder.encode("a <dogB1> dog")[0], _sd_encode(pipe, "a <dogB1> dog"))
    with pytest.raises(ValueError, match=r"dogB\.pth.*\[5, 32\]"):
        encoder.encode(
            "a <dogB1> dog",
            [ConceptLora(token_embeddings={"<dogB1>": torch.zeros(5, 32)}, source="dogB.pth")],
        )
