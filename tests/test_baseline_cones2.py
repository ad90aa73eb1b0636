"""Cones2 re-implementation: attention bias formula, layout maps, sampler, residual training, end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from test_baseline_pbe import FakeContext, make_tiny_bench

from baselines import cones2
from baselines.cones2.layout import attention_grids, subject_map
from baselines.cones2.residual import epoch_batches, preservation_loss
from baselines.cones2.sampler import euler_update
from bench.pipelines import sd_scheduler
from tests.conftest import at_once, slowed


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> FakeContext:
    return make_tiny_bench(tmp_path_factory.mktemp("tiny"))


def _attn() -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4).eval()


def test_bias_equals_the_formula_by_hand() -> None:
    attn = _attn()
    hidden, context = torch.randn(1, 4, 8), torch.randn(1, 5, 6)
    weight = torch.zeros(4, 5)
    weight[0, 2], weight[3, 2], weight[1, 3] = 2.5, -1e8, 2.5
    state = cones2.Cones2State({4: weight}, sigma=3.0, guidance_weight=0.08)
    out = cones2.Cones2AttnProcessor()(attn, hidden, context, cones2=state)

    q = attn.to_q(hidden).reshape(1, 4, 2, 4).permute(0, 2, 1, 3)  # [1, heads, N, d]
    k = attn.to_k(context).reshape(1, 5, 2, 4).permute(0, 2, 1, 3)
    v = attn.to_v(context).reshape(1, 5, 2, 4).permute(0, 2, 1, 3)
    scores = q @ k.transpose(-1, -2)
    bias = 0.08 * weight * math.log(1 + 3.0**2) * scores.std()
    probs = ((scores + bias) / 2.0).softmax(-1)  # 1/sqrt(4)
    expected = attn.to_out[0]((probs @ v).permute(0, 2, 1, 3).reshape(1, 4, 8))
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(cones2.layout_bias(scores, weight, 3.0, 0.08), bias)


def test_without_guidance_equals_plain_attention() -> None:
    attn = _attn()
    hidden, context = torch.randn(2, 4, 8), torch.randn(2, 5, 6)
    plain = AttnProcessor2_0()(attn, hidden, context)
    state = cones2.Cones2State({4: torch.zeros(4, 5)}, sigma=3.0, guidance_weight=0.08)
    assert torch.allclose(cones2.Cones2AttnProcessor()(attn, hidden, context, cones2=state), plain, atol=1e-5)
    assert torch.allclose(cones2.Cones2AttnProcessor()(attn, hidden, context, cones2=None), plain, atol=1e-6)


def test_prompt_positions_separate_same_class_subjects(ctx: FakeContext) -> None:
    tok = ctx.base_pipeline("real").tokenizer
    scene = ctx.spec.scenes["two-dogs"]
    prompt, subjects, appended = cones2.build_prompt(scene, ctx.spec, tok)
    assert prompt == "dog and dog on the grass" and appended == []
    assert [(s.concept, s.start, s.length) for s in subjects] == [("dogA", 1, 1), ("dogB", 3, 1)]
    ids = tok(prompt, padding="max_length", max_length=77).input_ids
    grids = attention_grids(8, 16, 4)
    assert grids == [(8, 16), (4, 8), (2, 4), (1, 2)]
    pos = cones2.layout_weights(subjects, ids, tok, grids, matching="position")[128].reshape(8, 16, 77)
    up = cones2.layout_weights(subjects, ids, tok, grids, matching="class_word")[128].reshape(8, 16, 77)
    map_a, map_b = subject_map(subjects, 0, 8, 16, 2.5, -1e8), subject_map(subjects, 1, 8, 16, 2.5, -1e8)
    assert torch.equal(pos[..., 1], map_a) and torch.equal(pos[..., 3], map_b)
    assert torch.equal(up[..., 1], map_a + map_b) and torch.equal(up[..., 3], map_a + map_b)  # upstream mixes
    # dogA box x 0.05-0.4, y 0.2-0.9 on an 8 x 16 grid: rows ceil(1.6)=2 .. floor(7.2)=7, cols 1 .. 6
    assert map_a[2:7, 1:6].eq(2.5).all() and map_a.eq(2.5).sum() == 25
    # everywhere else, dogB's box and the background alike, dogA's tokens get weight_negative (upstream L215)
    assert map_a.eq(-1e8).sum() == 8 * 16 - 25 and map_a[0, 0] == -1e8
    assert pos[..., [0, 2, 4]].eq(0).all()


def test_subject_map_is_negative_outside_its_box_background_included() -> None:
    """Upstream ``layout_guidance.py`` L215 (``_image_context_seperator``): ``torch.where(img_where_color,
    weight_active, neg)`` -- ``neg`` on every pixel outside the subject's colour, background included; the
    ``torch.where`` after it sets ``neg`` on coloured pixels still at 0 (only when ``weight_active == 0``)."""
    a = cones2.Subject("a", "dog", 1, 1, (0.0, 0.0, 0.5, 0.5))  # grid 4 x 6: rows 0-1, cols 0-2
    b = cones2.Subject("b", "cat", 3, 1, (0.5, 0.5, 1.0, 1.0))  # rows 2-3, cols 3-5
    A, N = 2.5, -1e8
    expected_a = torch.tensor([[A, A, A, N, N, N], [A, A, A, N, N, N], [N] * 6, [N] * 6])
    expected_b = torch.tensor([[N] * 6, [N] * 6, [N, N, N, A, A, A], [N, N, N, A, A, A]])
    assert torch.equal(subject_map([a, b], 0, 4, 6, A, N), expected_a)
    assert torch.equal(subject_map([a, b], 1, 4, 6, A, N), expected_b)
    assert torch.equal(subject_map([a, b], 0, 4, 6, 0.0, N), torch.full((4, 6), N))  # upstream's 0-weight quirk
    # an overlapping later box owns the shared cells, like a colour painted over another
    c = cones2.Subject("c", "cat", 3, 1, (0.0, 0.0, 1 / 3, 0.5))  # rows 0-1, cols 0-1
    assert torch.equal(subject_map([a, c], 0, 4, 6, A, N)[:2], torch.tensor([[N, N, A, N, N, N]] * 2))


def test_guidance_raises_token_attention_inside_its_box(ctx: FakeContext) -> None:
    pipe = ctx.base_pipeline("real")
    scene = ctx.spec.scenes["two-dogs"]
    prompt, subjects, _ = cones2.build_prompt(scene, ctx.spec, pipe.tokenizer)
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    weights = cones2.layout_weights(subjects, ids[0].tolist(), pipe.tokenizer, attention_grids(8, 16, 4))
    cond = pipe.text_encoder(ids)[0]
    latents = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(0))
    original = dict(pipe.unet.attn_processors)
    maps = {}
    try:
        pipe.unet.set_attn_processor(cones2.Cones2AttnProcessor())
        for gw in (0.0, 0.08):
            state = cones2.Cones2State(weights, sigma=14.6, guidance_weight=gw, record=[])
            with torch.no_grad():
                pipe.unet(latents, 999, encoder_hidden_states=cond, cross_attention_kwargs={"cones2": state})
            maps[gw] = [p for p in state.record if p.shape[1] == 128]  # the 8 x 16 layers
    finally:
        pipe.unet.set_attn_processor(original)
    inside_a = subject_map(subjects, 0, 8, 16, 1.0, 0.0).reshape(-1).bool()
    inside_b = subject_map(subjects, 1, 8, 16, 1.0, 0.0).reshape(-1).bool()
    outside_a = ~inside_a
    for plain, guided in zip(maps[0.0], maps[0.08], strict=True):
        assert guided[:, inside_a, 1].mean() > plain[:, inside_a, 1].mean()  # dogA's token inside dogA's box
        assert guided[:, inside_b, 1].max() < 1e-6  # and shut out of dogB's box
        assert guided[:, outside_a, 1].max() < 1e-6 < plain[:, outside_a & ~inside_b, 1].max()  # and the background
    assert all(type(pipe.unet.attn_processors[k]) is type(v) for k, v in original.items())


def test_euler_update_matches_diffusers_euler_step() -> None:
    sched = EulerDiscreteScheduler.from_config(sd_scheduler().config)
    sched.set_timesteps(4)
    x, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    reference = sched.step(eps, sched.timesteps[0], x).prev_sample
    mine = euler_update(x, eps, float(sched.sigmas[0]), float(sched.sigmas[1]))
    assert torch.allclose(mine, reference, atol=1e-5)
    vsched = EulerDiscreteScheduler.from_config(sd_scheduler().config, prediction_type="v_prediction")
    vsched.set_timesteps(4)
    vsched._step_index = 1  # a step from the second sigma
    ref_v = vsched.step(eps, vsched.timesteps[1], x).prev_sample
    mine_v = euler_update(x, eps, float(vsched.sigmas[1]), float(vsched.sigmas[2]), "v_prediction")
    assert torch.allclose(mine_v, ref_v, atol=1e-5)


def test_train_residual_and_roundtrip(ctx: FakeContext, tmp_path: Path) -> None:
    pipe = ctx.base_pipeline("real")
    before = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    concept = ctx.concept("dogA")
    res = cones2.train_residual(
        pipe, concept, ctx.reference_images("dogA"), 2, tmp_path / "dogA.pt", learning_rate=1e-3, resolution=32
    )
    assert res.shape == (1, 32) and res.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in pipe.text_encoder.state_dict().items())
    assert torch.equal(cones2.load_residual(tmp_path / "dogA.pt", 32, 1), res)
    with pytest.raises(ValueError, match=r"expected \[1, 64\]"):
        cones2.load_residual(tmp_path / "dogA.pt", 64, 1)


def test_preservation_loss_slices_like_upstream() -> None:
    """Upstream ``train_cones2.py``: ``torch.norm(torch.squeeze(target_embed)[:1] - torch.squeeze(e)[:1], 2)``
    and ``[1 + token_num:]``, so batch 1 slices tokens and batch 4 slices samples."""
    gen = torch.Generator().manual_seed(0)
    target, hidden = torch.randn(1, 77, 8, generator=gen), torch.randn(1, 77, 8, generator=gen)
    one = 1e-2 * (target[0, :1] - hidden[0, :1]).pow(2).sum().sqrt()
    one = one + 1e-3 * (target[0, 2:] - hidden[0, 2:]).pow(2).sum().sqrt()  # BOS, then after the 1-token word
    assert torch.allclose(preservation_loss(target, hidden, 1, 1e-2, 1e-3), one)
    target4, hidden4 = torch.randn(4, 77, 8, generator=gen), torch.randn(4, 77, 8, generator=gen)
    four = 1e-2 * (target4[0] - hidden4[0]).pow(2).sum().sqrt()  # the whole first sample, class word included
    four = four + 1e-3 * (target4[2:] - hidden4[2:]).pow(2).sum().sqrt()  # samples 2 and 3
    assert torch.allclose(preservation_loss(target4, hidden4, 1, 1e-2, 1e-3), four)
    assert preservation_loss(target4, hidden4, 3, 0.0, 1.0) == 0  # no sample left after 1 + 3


@pytest.mark.slow
def test_train_residual_in_batches(ctx: FakeContext) -> None:
    """``batch_size`` as upstream's ``--train_batch_size``: shuffled epochs cut into batches, the last smaller."""
    pipe = ctx.base_pipeline("real")
    images = ctx.reference_images("dogA")
    images = [*images, images[0]]  # 3 images: epochs of batches 2 + 1
    sizes = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    try:
        res = cones2.train_residual(pipe, ctx.concept("dogA"), images, 3, learning_rate=1e-3, resolution=32,
                                    batch_size=2)
    finally:
        hook.remove()
    assert sizes == [2, 1, 2] and res.shape == (1, 32) and torch.isfinite(res).all()
    assert [len(b) for b in epoch_batches(5, 4, torch.Generator().manual_seed(0))] == [4, 1]
    with pytest.raises(ValueError, match="batch_size"):
        cones2.train_residual(pipe, ctx.concept("dogA"), images, 1, batch_size=0)


@pytest.mark.slow
def test_generates_for_the_tiny_benchmark(ctx: FakeContext) -> None:
    spec = cones2.method_spec()
    method = spec.create(spec.resolve_params({"steps": 2, "guidance_steps": 2, "quick_train_steps": 1}))
    before = dict(ctx.base_pipeline("real").unet.attn_processors)
    gen = method.generate(ctx.spec.scenes["two-dogs"], 3, ctx)
    assert gen.image.size == (128, 64)
    assert gen.record["residuals"]["dogA"].startswith("quick:1 steps")
    assert [s["token_positions"] for s in gen.record["subjects"]] == [[1], [3]]
    assert len(list((ctx.cache_dir / "cones2").glob("dogA-quick1-*.pt"))) == 1
    after = ctx.base_pipeline("real").unet.attn_processors
    assert all(type(after[k]) is type(v) for k, v in before.items())
    again = method.generate(ctx.spec.scenes["two-dogs"], 3, ctx)
    assert list(again.image.getdata()) == list(gen.image.getdata())


def test_missing_residual_on_a_real_model_is_an_error(ctx: FakeContext) -> None:
    method = cones2.Cones2Method({**cones2.method.DEFAULTS})
    ctx_real = FakeContext(ctx.spec, ctx.cache_dir)
    ctx.base_pipeline("real")  # loaded under the tiny spec; the changed spec below names a model that is absent
    ctx_real._pipes = ctx._pipes
    from bench.spec import DatasetSpec

    ctx_real.spec = DatasetSpec(**{**ctx.spec.__dict__, "base_models": {"real": "/models/sd15"}})
    with pytest.raises(ValueError, match="bench cones2-train"):
        method.generate(ctx.spec.scenes["two-dogs"], 0, ctx_real)


def _tiny_sd2_pipeline():
    """SD2.x layout: 64-wide text encoder, linear projections, per-block head dims, v-prediction."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from randomworld.models import build_random_pipeline, random_unet_config

    base = build_random_pipeline()
    tok = base.tokenizer
    torch.manual_seed(5)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=len(tok),
            max_position_embeddings=77,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            hidden_act="gelu",
        )
    )
    unet = UNet2DConditionModel(
        **{**random_unet_config(64), "use_linear_projection": True, "attention_head_dim": (2, 4, 8, 8)}
    )
    scheduler = type(base.scheduler).from_config(base.scheduler.config, prediction_type="v_prediction")
    pipe = StableDiffusionPipeline(
        vae=base.vae,
        text_encoder=text_encoder.eval(),
        tokenizer=tok,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sd2_layout_with_residual_files(ctx: FakeContext, tmp_path: Path) -> None:
    sd2 = FakeContext(ctx.spec, tmp_path / "cache")
    sd2._pipes = {"real": _tiny_sd2_pipeline()}
    for cid, value in (("dogA", 0.5), ("dogB", -0.5)):
        cones2.save_residual(torch.full((64,), value), tmp_path / "res" / f"{cid}.pt")  # upstream: a bare [1024]
    spec = cones2.method_spec()
    params = spec.resolve_params({"steps": 2, "guidance_steps": 1, "residual_dir": str(tmp_path / "res")})
    gen = spec.create(params).generate(ctx.spec.scenes["two-dogs"], 0, sd2)
    assert gen.image.size == (128, 64) and gen.record["prediction_type"] == "v_prediction"
    assert gen.record["residuals"]["dogB"] == f"file:{tmp_path / 'res' / 'dogB.pt'}"
    assert np.asarray(gen.image).std() > 0


def test_residuals_shipped_with_the_dataset_are_used_after_explicit_ones(ctx: FakeContext, tmp_path: Path) -> None:
    """``<asset root>/cones2/<concept>.pt`` is used when no residual is given for the concept; an explicit
    ``residuals`` entry comes first. The images equal those made from the same files through residual_dir."""
    from bench.assets import AssetResolver

    for cid, value in (("dogA", 0.3), ("dogB", -0.3)):
        cones2.save_residual(torch.full((1, 32), value), tmp_path / "assets" / "cones2" / f"{cid}.pt")
    cones2.save_residual(torch.full((1, 32), 0.9), tmp_path / "explicit.pt")
    shipped = FakeContext(ctx.spec, tmp_path / "cache")
    shipped._pipes = ctx._pipes
    shipped.assets = AssetResolver(ctx.spec, tmp_path / "assets")
    spec = cones2.method_spec()
    quick = {"steps": 2, "guidance_steps": 2, "missing_residual": "error"}
    gen = spec.create(spec.resolve_params(quick)).generate(ctx.spec.scenes["two-dogs"], 1, shipped)
    assert gen.record["residuals"] == {"dogA": f"dataset:{tmp_path / 'assets' / 'cones2' / 'dogA.pt'}",
                                       "dogB": f"dataset:{tmp_path / 'assets' / 'cones2' / 'dogB.pt'}"}
    same = spec.create(spec.resolve_params({**quick, "residual_dir": str(tmp_path / "assets" / "cones2")}))
    assert np.array_equal(np.asarray(same.generate(ctx.spec.scenes["two-dogs"], 1, ctx).image), np.asarray(gen.image))
    first = spec.create(spec.resolve_params({**quick, "residuals": {"dogA": str(tmp_path / "explicit.pt")}}))
    mixed = first.generate(ctx.spec.scenes["two-dogs"], 1, shipped)
    assert mixed.record["residuals"]["dogA"] == f"file:{tmp_path / 'explicit.pt'}"
    assert mixed.record["residuals"]["dogB"].startswith("dataset:")
    assert not np.array_equal(np.asarray(mixed.image), np.asarray(gen.image))


def test_class_word_prompts_claim_their_words(ctx: FakeContext) -> None:
    from dataclasses import replace

    tok = ctx.base_pipeline("real").tokenizer
    scene = replace(ctx.spec.scenes["two-dogs"], prompt="a dog and a dog in a park")
    prompt, subjects, appended = cones2.build_prompt(scene, ctx.spec, tok)
    assert prompt == "a dog and a dog in a park" and appended == []
    assert [(s.concept, s.start) for s in subjects] == [("dogA", 2), ("dogB", 5)]
    scene = replace(scene, prompt="a park")
    prompt, subjects, appended = cones2.build_prompt(scene, ctx.spec, tok)
    assert prompt == "a park, a dog, a dog" and appended == ["dogA", "dogB"]
    assert [s.start for s in subjects] == [5, 8]


def test_callers_needing_one_quick_residual_at_once_train_it_once(ctx: FakeContext, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from baselines.cones2 import method as cones2_method

    calls: list[int] = []
    monkeypatch.setattr(cones2_method, "train_residual", slowed(cones2_method.train_residual, calls))
    monkeypatch.setattr(ctx, "cache_dir", tmp_path)
    spec = cones2.method_spec()
    params = spec.resolve_params({"quick_train_steps": 1, "quick_train_resolution": 32})
    pipe = ctx.base_pipeline("real")
    results = at_once(lambda: spec.create(params)._residual("dogA", ctx, pipe, "real")[0])
    assert len(calls) == 1 and len(results) == 2 and torch.equal(results[0], results[1])
