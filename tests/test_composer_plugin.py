"""LoRA-Composer registration and an end-to-end generation on the built-in tiny dataset."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.assets import AssetResolver
from bench.context import RunContext
from bench.plugins import get_plugin_manager, registered_methods
from bench.spec import load_spec
from tests.conftest import REPO

VARIANTS = {
    "lora-composer": (True, True, True),
    "lora-composer-ce-ci": (True, True, False),
    "lora-composer-ce": (True, False, False),
    "lora-composer-none": (False, False, False),
}


def _methods(monkeypatch) -> dict:
    monkeypatch.setenv("LCBENCH_PLUGINS", "composer.plugin")  # only the plugin under test
    return registered_methods(get_plugin_manager())


def test_methods_are_registered_with_official_defaults(monkeypatch) -> None:
    methods = _methods(monkeypatch)
    for name, switches in VARIANTS.items():
        spec = methods[name]
        d = spec.defaults
        assert (d["concept_enhancement"], d["concept_isolation"], d["latent_reinit"]) == switches
        assert d["num_steps"] == 50 and d["guidance_scale"] == 7.5 and d["max_refine_steps"] == 26
        assert (d["enhancement_weight"], d["fill_weight"], d["region_weight"], d["top_k_ratio"]) == (8, 2, 10, 0.2)
        assert any("tokenizer" in dev for dev in spec.deviations)
    params = methods["lora-composer"].resolve_params({"loss_level": "2", "num_steps": "3"})
    assert params["num_steps"] == 3
    assert (params["sketch_adapter"], params["pose_adapter"]) == ("auto", "auto")


def test_generate_with_background_leaves_the_shared_pipeline_unchanged(monkeypatch) -> None:
    spec = load_spec(REPO / "datasets" / "random.yaml")
    ctx = RunContext(spec, AssetResolver(spec))
    scene = spec.scenes["man_dog_cat_castle"]
    pipe = ctx.base_pipeline(scene.style)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    processors = dict(pipe.unet.attn_processors)
    methods = _methods(monkeypatch)
    params = methods["lora-composer"].resolve_params({"num_steps": 3, "loss_level": 2})
    generation = methods["lora-composer"].create(params).generate(scene, 7, ctx)
    assert generation.image.size == (scene.width, scene.height)
    record = generation.record
    assert record["background_concept"] == "castle"
    assert record["loss_level"] == 2 and "params" not in record  # the runner writes the parameters
    assert record["refine_steps_run"] == 3 and len(record["losses"]) == 3
    assert len(record["token_positions"]) == 3 and len(record["reinit_windows"]) == 3
    assert methods["lora-composer"].deviations
    after = pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == {k: type(v) for k, v in processors.items()}


def test_guided_scene_uses_the_builtin_adapters_while_refining_only(monkeypatch) -> None:
    spec = load_spec(REPO / "datasets" / "random.yaml")
    ctx = RunContext(spec, AssetResolver(spec))
    scene = spec.scenes["man_dog_cat_guided"]
    methods = _methods(monkeypatch)
    params = methods["lora-composer"].resolve_params({"num_steps": 3, "loss_level": 2, "max_refine_steps": 2})
    guided = methods["lora-composer"].create(params).generate(scene, 7, ctx)
    record = guided.record
    assert record["adapters"] == {"sketch": "builtin:random-t2i-sketch", "pose": "builtin:random-t2i-pose"}
    assert record["adapter_note"] is None
    assert record["refine_steps_run"] == 2 and record["adapter_steps"] == [0]  # refining CFG steps only
    unguided = methods["lora-composer"].create(params).generate(dataclasses.replace(scene, image_guidance=False),
                                                                7, ctx)
    assert unguided.record["adapters"] == {} and unguided.record["adapter_steps"] == []
    assert unguided.record["adapter_note"] == "scene has image_guidance false: sampled without adapter"
    assert list(guided.image.getdata()) != list(unguided.image.getdata())


def test_empty_boxes_are_recorded_and_warned_once_per_scene(monkeypatch) -> None:
    from composer.method import EmptyBoxWarning

    spec = load_spec(REPO / "datasets" / "random.yaml")
    ctx = RunContext(spec, AssetResolver(spec))
    methods = _methods(monkeypatch)
    method = methods["lora-composer"].create(methods["lora-composer"].resolve_params(
        {"num_steps": 2, "max_refine_steps": 2, "loss_level": 4}))
    scene = spec.scenes["girl_boy"]  # 64 x 128: both boxes round to no column of the 2 x 4 loss grid
    with pytest.warns(EmptyBoxWarning) as caught:
        records = [method.generate(scene, seed, ctx).record for seed in (7, 8)]
    caught = [w for w in caught if issubclass(w.category, EmptyBoxWarning)]
    assert len(caught) == 1, [str(w.message) for w in caught]  # one warning per scene, not per image
    message = str(caught[0].message)
    assert "scene 'girl_boy'" in message and "loss grid (2x4: 0:girl, 1:boy)" in message
    assert "adaptive_loss_level=true" in message
    for record in records:
        assert record["refine_steps_run"] == 0 and record["refine_forwards_run"] == 2
        assert [e["region"] for e in record["empty_boxes"] if e["map_grid"]] == [0, 1]
        assert record["reinit_windows"] == [None, None]
    adaptive = methods["lora-composer"].create(methods["lora-composer"].resolve_params(
        {"num_steps": 2, "max_refine_steps": 2, "loss_level": 4, "adaptive_loss_level": True}))
    with pytest.warns(EmptyBoxWarning) as caught:  # still empty on the mid block's 1 x 2 grid
        record = adaptive.generate(scene, 7, ctx).record
    assert "loss grid" not in str(caught[0].message)
    assert record["loss_level"] == 2 and record["loss_level_requested"] == 4  # the 4 x 8 grid keeps both
    assert record["refine_steps_run"] == 2 and not [e for e in record["empty_boxes"] if e["map_grid"]]


def test_auto_adapter_with_a_real_base_model_is_a_clear_error(monkeypatch) -> None:
    spec = load_spec(REPO / "datasets" / "random.yaml")
    ctx = RunContext(spec, AssetResolver(spec))
    monkeypatch.setattr(ctx.assets, "base_model_ref", lambda style: "/models/sd15")
    methods = _methods(monkeypatch)
    method = methods["lora-composer"].create(methods["lora-composer"].resolve_params({"sketch_adapter": "none"}))
    with pytest.raises(ValueError, match=r"lora-composer: scene 'man_dog_cat_guided' .* parameter 'pose_adapter' "
                                         r"is 'auto'.*'/models/sd15'.*local diffusers T2IAdapter folder \(e\.g\. "
                                         r"TencentARC t2iadapter_keypose_sd14v1"):
        method.generate(spec.scenes["man_dog_cat_guided"], 7, ctx)  # fails before loading any model
