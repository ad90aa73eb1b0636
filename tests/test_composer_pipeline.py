"""The LoRA-Composer sampler: equivalence to diffusers, concept enhancement, schedule, T2I-Adapter."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import T2IAdapter

from bench.seeds import initial_noise
from composer.config import ComposerConfig
from composer.guidance import composer_sampler
from composer.layout import RegionInput, prepare_layout
from randomworld.loras import random_concept_lora
from regions.adapters import adapter_residuals, load_adapter, weight_map
from regions.controller import Controller
from regions.processors import region_processors
from regions.sampler import RegionSampler


@pytest.fixture(scope="module")
def regions(pipe) -> list[RegionInput]:
    cat = random_concept_lora(pipe.unet, pipe.text_encoder, ["<a1>", "<a2>"], seed=1)
    dog = random_concept_lora(pipe.unet, pipe.text_encoder, ["<b1>", "<b2>"], seed=2)
    return [
        RegionInput((0.0, 0.0, 0.5, 1.0), "a <a1> <a2>, on the grass", cat, ("<a1>", "<a2>"), "low quality"),
        RegionInput((0.5, 0.25, 1.0, 1.0), "photo of <b1> <b2>", dog, ("<b1>", "<b2>"), "low quality"),
    ]


def _scheduler(pipe):
    return type(pipe.scheduler).from_config(pipe.scheduler.config)


def test_no_regions_no_constraints_equals_stable_diffusion_pipeline(pipe) -> None:
    noise = initial_noise(3, (1, 4, 8, 16))
    expected = pipe("a photo of a cat", negative_prompt="blurry", num_inference_steps=3, guidance_scale=7.5,
                    latents=noise.clone(), height=64, width=128, output_type="latent").images
    layout = prepare_layout(pipe, "a photo of a cat", "blurry")
    config = ComposerConfig(num_steps=3, concept_enhancement=False, concept_isolation=False, latent_reinit=False)
    result = composer_sampler(pipe.unet, _scheduler(pipe), layout, config)(noise)
    torch.testing.assert_close(result.latents, expected, rtol=1e-5, atol=1e-5)
    assert not any(type(p).__module__.startswith("regions") for p in pipe.unet.attn_processors.values())
    assert all(p.requires_grad for p in pipe.unet.parameters())  # flags restored


def test_token_positions_come_from_the_tokenizer(pipe, regions) -> None:
    layout = prepare_layout(pipe, "a cat and a dog", "low quality", regions)
    assert layout.token_positions == [[2, 3], [3, 4]]  # SOT, a, <a1>, <a2> / SOT, photo, of, <b1>, <b2>


def _in_box_mass(sampler: RegionSampler) -> list[float]:
    """Per region: the concept tokens' cross-attention (last forward's maps) summed over the cells of its box."""
    geo = sampler.controller.geometry(sampler.settings.map_level)
    cross = sampler.controller.store.cross_mean().detach().view(len(geo.grid_boxes), geo.h, geo.w, -1)
    masses = []
    for r, (y0, y1, x0, x1) in enumerate(geo.grid_boxes):
        a = cross[r][:, :, list(sampler.layout.token_positions[r])].sum(-1)
        masses.append(float(a[y0:y1, x0:x1].sum()))
    return masses


def _refined_masses(pipe, regions, enhancement: bool, steps: int = 3) -> list[list[float]]:
    layout = prepare_layout(pipe, "a cat and a dog", "low quality", regions)
    # Loss level 1 (an 8x8 grid at 64x64 px) and a larger step, so the tiny random model moves visibly.
    config = ComposerConfig(num_steps=4, loss_level=1, concept_enhancement=enhancement, step_size=100.0)
    scheduler = _scheduler(pipe)
    scheduler.set_timesteps(4)
    sampler = composer_sampler(pipe.unet, scheduler, layout, config)
    sampler.controller = Controller(boxes=layout.boxes, latent_hw=(8, 8), layers=layout.caches, map_level=1)
    latents, t = initial_noise(5, (1, 4, 8, 8)), scheduler.timesteps[1]
    history = []
    with region_processors(pipe.unet, sampler.controller):
        for _ in range(steps):
            latents, _, _, _ = sampler.guidance.refine(sampler, latents, t, config.step_size, adapter=False)
            if enhancement:  # the maps of this refinement's forward (before its update)
                history.append(_in_box_mass(sampler))
        with torch.no_grad():
            sampler.conditional_maps(latents, t, cross=True, self_maps=False, adapter=False)
        history.append(_in_box_mass(sampler))
    return history


def test_concept_enhancement_raises_in_box_attention(pipe, regions) -> None:
    on = _refined_masses(pipe, regions, enhancement=True)
    off = _refined_masses(pipe, regions, enhancement=False)  # isolation loss only
    assert len(on) == 4 and len(off) == 1
    for r in range(len(regions)):
        trace = [step[r] for step in on]
        assert all(b > a for a, b in zip(trace, trace[1:], strict=False)), trace
        assert on[-1][r] > off[-1][r]


def test_refinement_schedule_and_record(pipe, regions) -> None:
    layout = prepare_layout(pipe, "a cat and a dog", "low quality", regions)
    config = ComposerConfig(num_steps=4, loss_level=2, max_refine_steps=3)
    result = composer_sampler(pipe.unet, _scheduler(pipe), layout, config)(initial_noise(1, (1, 4, 8, 8)))
    log = result.log
    assert log["refine_steps"] == 3 and log["stop_step"] == 2  # i = 0, 1, 2 (i >= max - 1 stops)
    assert [entry["step"] for entry in log["losses"]] == [0, 1, 2]
    assert len(log["reinit_windows"]) == 2
    assert torch.isfinite(result.latents).all()
    sizes = config.step_sizes()
    assert float(sizes[0]) == pytest.approx(20.0) and float(sizes[-1]) == pytest.approx(20 * 0.5**0.5)


def test_adapter_weight_map_and_refinement_only_application(pipe, regions) -> None:
    wmap = weight_map([(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)], [1.0, None], 0.25, 2, 4)
    assert wmap.tolist() == [[1.0, 1.0, 0.25, 0.25]] * 2
    torch.manual_seed(0)
    adapter = T2IAdapter(in_channels=3, channels=list(pipe.unet.config.block_out_channels), num_res_blocks=2,
                         downscale_factor=8, adapter_type="full_adapter")
    image = torch.rand(1, 3, 64, 64)
    features = adapter_residuals({"pose": adapter}, {"pose": image}, [r.box for r in regions],
                                 [{"pose": 1.0}, {}], {"pose": 0.0})
    assert features is not None and len(features) == 4
    raw = adapter(image)[0]
    assert torch.all(features[0][..., :, 4:] == 0)  # global weight 0 outside region 0 (region 1 unweighted)
    torch.testing.assert_close(features[0][..., :, :4], raw[..., :, :4])
    config = ComposerConfig(num_steps=3, loss_level=2, max_refine_steps=2, latent_reinit=False)
    noise = initial_noise(2, (1, 4, 8, 8))
    with_adapter = prepare_layout(pipe, "two pets", "low quality", regions, adapter_features=features)
    plain = prepare_layout(pipe, "two pets", "low quality", regions)
    result = composer_sampler(pipe.unet, _scheduler(pipe), with_adapter, config)(noise)
    baseline = composer_sampler(pipe.unet, _scheduler(pipe), plain, config)(noise)
    assert result.log["adapter_steps"] == [0]  # CFG steps while refining (stops after step 1's update)
    assert not torch.allclose(result.latents, baseline.latents)


def test_early_stop_rule_and_step_sizes(pipe, regions) -> None:
    """Stop for good when the loss rises from step 5 on (that step's update still applies); official lr_i."""
    layout = prepare_layout(pipe, "a cat and a dog", "low quality", regions)
    config = ComposerConfig(num_steps=12, loss_level=2, latent_reinit=False)
    sampler = composer_sampler(pipe.unet, _scheduler(pipe), layout, config)
    scripted = iter([5.0, 4.0, 3.0, 3.5, 2.0, 1.9, 2.5, 1.0])
    step_sizes: list[float] = []

    def fake_refine(sampler, latents, t, step_size, adapter):
        step_sizes.append(step_size)
        return latents, next(scripted), {}, True

    sampler.guidance.refine = fake_refine  # type: ignore[method-assign]
    sampler._denoise = lambda latents, t, adapter: latents  # type: ignore[method-assign]
    log = sampler(initial_noise(0, (1, 4, 8, 8))).log
    assert log["stop_step"] == 6 and log["refine_steps"] == 7  # the rise at step 3 (< 5) does not stop
    expected = [20 * (1 - 0.5 * i / 11) ** 0.5 for i in range(7)]
    assert step_sizes == pytest.approx(expected, rel=1e-6)


def test_paper_reinit_variant_updates_before_the_window_search(pipe, regions) -> None:
    layout = prepare_layout(pipe, "a cat and a dog", "low quality", regions)
    noise = initial_noise(4, (1, 4, 8, 8))
    logs = {}
    for variant in (False, True):
        config = ComposerConfig(num_steps=2, loss_level=2, max_refine_steps=1, reinit_update=variant)
        logs[variant] = composer_sampler(pipe.unet, _scheduler(pipe), layout, config)(noise)
    assert "reinit_update_loss" in logs[True].log and "reinit_update_loss" not in logs[False].log
    assert not torch.allclose(logs[True].latents, logs[False].latents)


def test_boxes_empty_at_coarse_levels_are_guarded(pipe, regions) -> None:
    """A box thinner than one cell at the loss level (and at coarse attention levels) gives no NaN."""
    thin = [dataclasses.replace(regions[0], box=(0.05, 0.0, 0.1, 1.0)), regions[1]]
    layout = prepare_layout(pipe, "a cat and a dog", "low quality", thin)
    config = ComposerConfig(num_steps=2, loss_level=4, max_refine_steps=2)
    result = composer_sampler(pipe.unet, _scheduler(pipe), layout, config)(initial_noise(6, (1, 4, 8, 8)))
    assert torch.isfinite(result.latents).all()
    assert all(torch.isfinite(torch.tensor(entry["total"])) for entry in result.log["losses"])
    assert result.log["reinit_windows"][0] is None  # empty at the 2x2 loss grid


def test_empty_loss_boxes_take_no_gradient_step_and_say_so(pipe, regions, monkeypatch) -> None:
    """Boxes with no cell on the loss grid: a constant-0 loss, no backward pass, and a log that says so."""
    thin = [dataclasses.replace(regions[0], box=(0.05, 0.0, 0.45, 1.0)),
            dataclasses.replace(regions[1], box=(0.55, 0.0, 0.95, 1.0))]  # both empty on a 2x2 grid
    layout = prepare_layout(pipe, "a cat and a dog", "low quality", thin)
    noise = initial_noise(6, (1, 4, 8, 8))
    backward = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *args, **kwargs: backward.append(1) or grad(*args, **kwargs))
    config = ComposerConfig(num_steps=3, loss_level=4, max_refine_steps=3)  # the official image/32 grid: 2x2
    log = composer_sampler(pipe.unet, _scheduler(pipe), layout, config)(noise).log
    assert backward == [] and log["refine_steps"] == 0 and log["refine_forwards"] == 3
    assert [(e["total"], e["gradient_step"]) for e in log["losses"]] == [(0.0, False)] * 3
    assert log["reinit_windows"] == [None, None]
    on_loss_grid = [(e["region"], e["grid_hw"]) for e in log["empty_boxes"] if e["map_grid"]]
    assert on_loss_grid == [(0, [2, 2]), (1, [2, 2])]
    assert {(e["region"], tuple(e["grid_hw"])) for e in log["empty_boxes"]} >= {(0, (1, 1)), (1, (1, 1))}  # mid block

    adaptive = dataclasses.replace(config, adaptive_loss_level=True)
    with pytest.raises(ValueError, match="latent size"):
        composer_sampler(pipe.unet, _scheduler(pipe), layout, adaptive)
    log = composer_sampler(pipe.unet, _scheduler(pipe), layout, adaptive, (8, 8))(noise).log
    assert log["loss_level"] == 1  # 4x4 still loses both boxes; 8x8 keeps them
    assert log["refine_steps"] == 3 and len(backward) == 3 and all(e["gradient_step"] for e in log["losses"])
    assert all(w is not None for w in log["reinit_windows"])
    assert not [e for e in log["empty_boxes"] if e["map_grid"]]
    # where every box keeps a cell, the adaptive level is the official one
    assert composer_sampler(pipe.unet, _scheduler(pipe), prepare_layout(pipe, "a cat and a dog", "", regions),
                            adaptive, (8, 8)).settings.map_level == 4


@pytest.mark.parametrize(("kind", "channels"), [("pose", 3), ("sketch", 1)])
def test_builtin_tiny_adapters_are_deterministic_and_fit_the_tiny_unet(pipe, kind, channels) -> None:
    rng = torch.get_rng_state()
    first = load_adapter(f"builtin:random-t2i-{kind}", kind, torch.device("cpu"), torch.float32)
    second = load_adapter(f"builtin:random-t2i-{kind}", kind, torch.device("cpu"), torch.float32)
    assert torch.equal(torch.get_rng_state(), rng)  # built under a forked RNG
    assert first.config.in_channels == channels
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    image = torch.rand(1, channels, 64, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = first(image)
    # one residual per down block: that block's width, at the latent size (8 x 16) halved per level
    widths = pipe.unet.config.block_out_channels
    assert [tuple(f.shape) for f in features] == [(1, w, 8 >> i, 16 >> i) for i, w in enumerate(widths)]
    noise, t = initial_noise(1, (1, 4, 8, 16)), torch.tensor(500)
    states = torch.randn(1, 77, pipe.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = pipe.unet(noise, t, encoder_hidden_states=states).sample
        guided = pipe.unet(noise, t, encoder_hidden_states=states,
                           down_intrablock_additional_residuals=[f.clone() for f in features]).sample
    assert guided.shape == plain.shape and not torch.allclose(guided, plain, atol=1e-3)
    with pytest.raises(ValueError, match=r"parameter 'pose_adapter': unknown built-in adapter 'builtin:nope'"):
        load_adapter("builtin:nope", "pose", torch.device("cpu"), torch.float32)
