"""The batched region injection and the grouped concept region mask equal the processors they replaced.

The reference is a frozen copy of the old processors (``tests/reference_regions.py``: a per-region loop
inside the boxes, a dense ``0 / -inf`` self-attention bias). Fused attention sums in another order, so
values agree to float rounding (checked at 1e-5 per layer, outputs and input gradients), masked
probabilities are exactly 0 in both, and the stored maps (the explicit path the losses read) are bitwise
equal. End to end (re-initialization, refinement, 8 sampling steps) the latents agree to 1e-4 and the
8-bit images to one level: not bitwise, because fused attention sums in another order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_regions import OldCrossAttnProcessor, OldSelfAttnProcessor, old_region_processors

import regions.sampler
from bench.layers import attention_level, cross_attention_layers
from bench.pipelines import decode
from bench.seeds import initial_noise
from composer.config import ComposerConfig
from composer.guidance import composer_sampler
from composer.layout import RegionInput, prepare_layout
from randomworld.loras import random_concept_lora
from regions.controller import Controller
from regions.processors import CrossAttnProcessor, SelfAttnProcessor
from regions.sources import ConceptDeltas, build_layer_caches

LAYOUTS = {
    "grid": [(0.02, 0.02, 0.48, 0.48), (0.52, 0.02, 0.98, 0.48), (0.02, 0.52, 0.48, 0.98), (0.52, 0.52, 0.98, 0.98)],
    "overlap": [(0.0, 0.0, 0.5, 0.75), (0.375, 0.25, 1.0, 1.0), (0.75, 0.0, 1.0, 0.25)],
    "cover": [(0.0, 0.0, 0.6, 1.0), (0.4, 0.0, 1.0, 1.0)],  # no background: overlap queries see every key
    "one": [(0.1, 0.1, 0.7, 0.9)],
    "thin": [(0.0, 0.0, 0.5, 1.0), (0.52, 0.0, 0.56, 1.0), (0.6, 0.2, 1.0, 0.9)],  # region 1 empty on coarse grids
}
TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def loras(pipe):
    return [random_concept_lora(pipe.unet, pipe.text_encoder, [f"<r{i}a>", f"<r{i}b>"], seed=10 + i)
            for i in range(4)]


def _controller(pipe, boxes, loras, mode: str, **kwargs) -> Controller:
    g = torch.Generator().manual_seed(0)
    dim = pipe.unet.config.cross_attention_dim
    global_embeds = torch.randn(2, 16, 77, dim, generator=g)
    region_embeds = torch.randn(len(boxes), 2, 16, 77, dim, generator=g)
    caches = build_layer_caches(pipe.unet, global_embeds, region_embeds, ConceptDeltas(loras[: len(boxes)]))
    return Controller(boxes=boxes, latent_hw=(8, 16), layers=caches, mode=mode, **kwargs)


def _hidden(attn, n: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, attn.to_q.in_features, generator=g).requires_grad_(True)


def _both(new, old, attn, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs and input gradients (of a fixed random projection) of both processors."""
    results = []
    for processor in (new, old):
        h = hidden.detach().clone().requires_grad_(True)
        out = processor(attn, h)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (grad,) = torch.autograd.grad((out * weight).sum(), h)
        results += [out.detach(), grad]
    return results[0], results[2], results[1], results[3]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("mode", ["cfg", "cond"])
def test_grouped_self_attention_equals_the_dense_masked_one(pipe, loras, one_thread, layout, mode) -> None:
    boxes = LAYOUTS[layout]
    for name in ("down_blocks.0.attentions.0.transformer_blocks.0.attn1",
                 "down_blocks.1.attentions.1.transformer_blocks.0.attn1",
                 "up_blocks.1.attentions.2.transformer_blocks.0.attn1"):
        level = attention_level(pipe.unet, name)
        ctl = _controller(pipe, boxes, loras, mode)
        attn = pipe.unet.get_submodule(name)
        hidden = _hidden(attn, (8 // level) * (16 // level), 2 if mode == "cfg" else 1, seed=level)
        new, old, new_grad, old_grad = _both(SelfAttnProcessor(ctl, name, level),
                                             OldSelfAttnProcessor(ctl, name, level), attn, hidden)
        torch.testing.assert_close(new, old, **TOL)
        torch.testing.assert_close(new_grad, old_grad, **TOL)
        if layout == "one":  # one box: no mask, the very same fused call
            assert torch.equal(new, old)


@pytest.mark.parametrize("layout", ["grid", "overlap", "cover"])
def test_stored_self_maps_are_bitwise_equal(pipe, loras, layout) -> None:
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    attn = pipe.unet.get_submodule(name)
    hidden = _hidden(attn, 8 * 16, 1, seed=3).detach()
    maps, outs = [], []
    for cls in (SelfAttnProcessor, OldSelfAttnProcessor):
        ctl = _controller(pipe, LAYOUTS[layout], loras, "cond", store_self=True, map_level=1)
        outs.append(cls(ctl, name, 1)(attn, hidden))
        maps.append(ctl.store.self_mean())
    assert torch.equal(maps[0], maps[1]) and torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("mode", ["cfg", "cond", "store"])
def test_batched_region_injection_equals_the_per_region_loop(pipe, loras, one_thread, layout, mode) -> None:
    boxes = LAYOUTS[layout]
    names = cross_attention_layers(pipe.unet)
    for index in (0, 3, 6, 9, 15):
        name = names[index]
        level = attention_level(pipe.unet, name)
        store = {"store_cross": True, "map_level": level} if mode == "store" else {}
        controllers = [_controller(pipe, boxes, loras, "cfg" if mode == "cfg" else "cond", **store) for _ in range(2)]
        attn = pipe.unet.get_submodule(name)
        hidden = _hidden(attn, (8 // level) * (16 // level), 2 if mode == "cfg" else 1, seed=index)
        new, old, new_grad, old_grad = _both(CrossAttnProcessor(controllers[0], name, level, index),
                                             OldCrossAttnProcessor(controllers[1], name, level, index), attn, hidden)
        torch.testing.assert_close(new, old, **TOL)
        torch.testing.assert_close(new_grad, old_grad, **TOL)
        if mode == "store":  # the maps the losses read, and the in-box outputs computed from them
            assert torch.equal(controllers[0].store.cross, controllers[1].store.cross)
            assert torch.equal(new, old)


def test_lora_composer_images_equal_the_old_processors(pipe, loras, one_thread, monkeypatch) -> None:
    """End to end on the random pipeline: re-initialization, refinement, CFG sampling and decoding."""
    boxes = LAYOUTS["overlap"]
    inputs = [RegionInput(box, f"a <r{i}a> <r{i}b>, near a lake", loras[i], (f"<r{i}a>", f"<r{i}b>"), "low quality")
              for i, box in enumerate(boxes)]
    layout = prepare_layout(pipe, "three things near a lake", "low quality", inputs)
    config = ComposerConfig(num_steps=8, max_refine_steps=5, loss_level=2)
    noise = initial_noise(11, (1, 4, 16, 16))
    results = {}
    for which in ("old", "new"):
        if which == "old":
            monkeypatch.setattr(regions.sampler, "region_processors", old_region_processors)
        else:
            monkeypatch.undo()
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        result = composer_sampler(pipe.unet, scheduler, layout, config)(noise)
        results[which] = (result, np.asarray(decode(pipe, result.latents)).astype(int))
    (old, old_image), (new, new_image) = results["old"], results["new"]
    assert new.log["refine_steps"] == old.log["refine_steps"] == 5
    assert new.log["reinit_windows"] == old.log["reinit_windows"]
    for a, b in zip(new.log["losses"], old.log["losses"], strict=True):
        assert a["total"] == pytest.approx(b["total"], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(new.latents, old.latents, rtol=1e-3, atol=1e-4)
    # 8-bit images: at most one level apart, in a few pixels (measured: 1 level in 0.006 % of the values)
    assert np.abs(new_image - old_image).max() <= 1 and (new_image != old_image).mean() < 1e-3
