"""Region-aware attention: low-rank region keys/values vs merged weights, layer routing, the region mask."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from bench.layers import cross_attention_layers
from bench.prompts import LayerwiseTextEncoder
from composer.layout import RegionInput, prepare_layout
from randomworld.loras import random_concept_lora
from regions.controller import Controller
from regions.processors import CrossAttnProcessor, SelfAttnProcessor, region_processors
from regions.sources import ConceptDeltas, build_layer_caches

SD15_ORDER = (
    [f"down_blocks.{b}.attentions.{a}" for b in range(3) for a in range(2)]
    + ["mid_block.attentions.0"]
    + [f"up_blocks.{b}.attentions.{a}" for b in range(1, 4) for a in range(3)]
)


@pytest.fixture(scope="module")
def lora(pipe):
    return random_concept_lora(pipe.unet, pipe.text_encoder, ["<x1>", "<x2>"], seed=3)


def _merged_attention(pipe, lora, name: str):
    """A copy of one attn2 with the concept's deltas merged by hand: W + scale * up @ down."""
    attn = copy.deepcopy(pipe.unet.get_submodule(name))
    with torch.no_grad():
        for proj in ("to_k", "to_v", "to_out.0"):
            delta = lora.unet[f"{name}.{proj}"]
            attn.get_submodule(proj).weight += delta.scale * delta.up @ delta.down
    return attn


def _layerwise_embeds(layers: int, regions: int = 0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (regions, 2, layers, 77, 32) if regions else (2, layers, 77, 32)
    return torch.randn(shape, generator=g)


def test_region_keys_values_equal_merged_weights(pipe, lora) -> None:
    names = cross_attention_layers(pipe.unet)
    global_embeds, region_embeds = _layerwise_embeds(16), _layerwise_embeds(16, regions=2, seed=1)
    other = random_concept_lora(pipe.unet, pipe.text_encoder, ["<y1>", "<y2>"], seed=4)
    caches = build_layer_caches(pipe.unet, global_embeds, region_embeds, ConceptDeltas([other, lora]))
    for index in (0, 6, 15):
        merged = _merged_attention(pipe, lora, names[index])
        e = region_embeds[1, :, index]  # region 1 uses `lora`, both CFG branches
        heads = merged.heads
        expect_k = merged.to_k(e).view(2, 77, heads, -1).transpose(1, 2)
        expect_v = merged.to_v(e).view(2, 77, heads, -1).transpose(1, 2)
        torch.testing.assert_close(caches[index].region_k[:, :, 1], expect_k, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(caches[index].region_v[:, :, 1], expect_v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index", [1, 6, 12])
def test_region_output_equals_merged_model_inside_the_box(pipe, lora, index: int) -> None:
    """A box covering the whole image: the output is exactly the merged layer's attention to the region prompt."""
    names = cross_attention_layers(pipe.unet)
    global_embeds, region_embeds = _layerwise_embeds(16), _layerwise_embeds(16, regions=1, seed=2)
    caches = build_layer_caches(pipe.unet, global_embeds, region_embeds, ConceptDeltas([lora]))
    controller = Controller(boxes=[(0.0, 0.0, 1.0, 1.0)], latent_hw=(8, 16), layers=caches)
    attn = pipe.unet.get_submodule(names[index])
    level = {1: 1, 6: 8, 12: 2}[index]
    h, w = controller.grid(level)
    hidden = torch.randn(2, h * w, attn.to_q.in_features, generator=torch.Generator().manual_seed(5))
    got = CrossAttnProcessor(controller, names[index], level, index)(attn, hidden)
    expected = AttnProcessor2_0()(_merged_attention(pipe, lora, names[index]), hidden, region_embeds[0, :, index])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    controller.mode, controller.store_cross = "cond", True  # explicit-probability path, batch 1
    got_explicit = CrossAttnProcessor(controller, names[index], level, index)(attn, hidden[1:])
    torch.testing.assert_close(got_explicit, expected[1:], rtol=1e-4, atol=1e-5)


def test_layerwise_embeddings_reach_their_layers(pipe) -> None:
    """Layer l reads row l in down -> mid -> up order (attn_processors order, down -> up -> mid, would fail)."""
    assert list(pipe.unet.attn_processors)[-2].startswith("mid_block")  # the trap: mid comes last there
    global_embeds = _layerwise_embeds(16, seed=7)
    caches = build_layer_caches(pipe.unet, global_embeds)
    controller = Controller(boxes=[], latent_hw=(8, 16), layers=caches)
    with region_processors(pipe.unet, controller):
        processors = pipe.unet.attn_processors
        for index, block in enumerate(SD15_ORDER):
            name = f"{block}.transformer_blocks.0.attn2"
            processor = processors[f"{name}.processor"]
            assert isinstance(processor, CrossAttnProcessor) and processor.index == index
            attn = pipe.unet.get_submodule(name)
            hidden = torch.randn(2, 3, attn.to_q.in_features)
            expected = AttnProcessor2_0()(attn, hidden, global_embeds[:, index])
            torch.testing.assert_close(processor(attn, hidden), expected, rtol=1e-4, atol=1e-5)
    assert not any(isinstance(p, CrossAttnProcessor) for p in pipe.unet.attn_processors.values())


def test_region_mask_blocks_attention_between_boxes(pipe) -> None:
    boxes = [(0.0, 0.0, 0.5, 0.75), (0.375, 0.25, 1.0, 1.0), (0.75, 0.0, 1.0, 0.25)]  # 0 and 1 overlap
    caches = build_layer_caches(pipe.unet, _layerwise_embeds(16))
    controller = Controller(boxes=boxes, latent_hw=(8, 16), layers=caches, mode="cond", store_self=True,
                            map_level=1)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    attn = pipe.unet.get_submodule(name)
    hidden = torch.randn(1, 8 * 16, attn.to_q.in_features, generator=torch.Generator().manual_seed(0))
    explicit = SelfAttnProcessor(controller, name, 1)(attn, hidden)
    probs = controller.store.self_mean()
    geo = controller.geometry(1)
    members = [set(ix.tolist()) for ix in geo.indices]
    checked = 0
    for r, queries in enumerate(members):
        for j, keys in enumerate(members):
            if r != j:
                block = probs[sorted(queries)][:, sorted(keys)]
                assert torch.all(block == 0), (r, j)
                checked += block.numel()
    assert checked > 0
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(8 * 16))
    background = sorted(set(range(8 * 16)) - set().union(*members))
    assert torch.all(probs[background] > 0)  # background queries see every key
    controller.store_self = False  # the fused (SDPA) path applies the same mask
    fused = SelfAttnProcessor(controller, name, 1)(attn, hidden)
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-5)


def test_edlora_layer_rows_reach_their_cross_attention_layers(pipe, lora) -> None:
    """Region keys at layer l come from the prompt encoded with row l of each ED-LoRA token embedding."""
    region = RegionInput((0.0, 0.0, 1.0, 1.0), "a <x1> <x2> dog", lora, ("<x1>", "<x2>"))
    layout = prepare_layout(pipe, "a dog", "", [region])
    names = cross_attention_layers(pipe.unet)
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    for index, block in ((0, SD15_ORDER[0]), (6, SD15_ORDER[6]), (7, SD15_ORDER[7]), (15, SD15_ORDER[15])):
        assert names[index].startswith(block)
        row_only = dataclasses.replace(lora, token_embeddings={t: e[index : index + 1]
                                                               for t, e in lora.token_embeddings.items()})
        embeds = encoder.encode("a <x1> <x2> dog", concepts=[row_only], text_lora=lora)[0]
        merged = _merged_attention(pipe, lora, names[index])
        expected = merged.to_k(embeds[None]).view(1, 77, merged.heads, -1).transpose(1, 2)[0]
        torch.testing.assert_close(layout.caches[index].region_k[1, :, 0], expected, rtol=1e-4, atol=1e-5)
