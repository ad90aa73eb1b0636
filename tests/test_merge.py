"""The lora-merge baseline against diffusers' own pipeline with the ED-LoRAs merged by hand."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import torch

from baselines.merge import DEFAULTS, LoraMerge, method_specs
from bench.assets import AssetResolver
from bench.context import RunContext
from bench.seeds import initial_noise
from bench.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SUFFIX = re.compile(r"(_lora\.(down|up)|\.lora_(down|up))\.weight$")


def merge_by_hand(pipe, path: Path, weight: float) -> None:
    """W += weight * up @ down, reading the raw ED-LoRA file (either key spelling)."""
    params = torch.load(path, weights_only=True)["params"]
    for part, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        tensors = params[part]
        for key, down in tensors.items():
            match = SUFFIX.search(key)
            if not match or "down" not in match.group(0):
                continue
            module = key[: match.start()].removeprefix("text_model.")
            up = tensors[key[: match.start()] + match.group(0).replace("down", "up")]
            linear = model.get_submodule(module)
            with torch.no_grad():
                linear.weight += weight * (up @ down)


def test_merge_equals_diffusers_with_hand_merged_weights():
    spec = load_spec(REPO / "datasets" / "random.yaml")
    assets = AssetResolver(spec, None)
    ctx = RunContext(spec, assets)
    scene = spec.scenes["cat_dog"]
    seed, steps = 5, 3

    reference = copy.deepcopy(ctx.base_pipeline(scene.style))
    for concept in scene.concept_ids:
        merge_by_hand(reference, assets.lora_path(concept), 0.5)
    latents = initial_noise(seed, (1, 4, scene.height // 8, scene.width // 8))
    expected = reference(
        prompt=scene.prompt, negative_prompt=scene.negative_prompt, latents=latents, num_inference_steps=steps,
        guidance_scale=7.5, height=scene.height, width=scene.width, output_type="np",
    ).images[0]

    before = {k: v.clone() for k, v in ctx.base_pipeline(scene.style).unet.state_dict().items()}
    generation = LoraMerge(dict(DEFAULTS, steps=steps)).generate(scene, seed, ctx)
    got = np.asarray(generation.image, dtype=np.float32) / 255
    assert np.abs(got - expected).max() <= 1 / 255 + 1e-6
    assert generation.record["lora_weight"] == 0.5
    after = ctx.base_pipeline(scene.style).unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the shared base model must be restored"
    plain = LoraMerge(dict(DEFAULTS, steps=steps, normalize=False)).generate(scene, seed, ctx)
    assert not np.array_equal(np.asarray(plain.image), np.asarray(generation.image))


def test_composlora_merge_is_each_lora_at_08_equal_to_diffusers():
    """ComposLoRA's merge (Multi-LoRA-Composition ``compose_lora.py``: ``set_adapters(cur_loras)``, then
    ``cross_attention_kwargs={"scale": args.lora_scale}`` with ``--lora_scale`` default 0.8) is
    W0 + sum_i 0.8 dW_i, unlike lora-merge's 1/N."""
    specs = {spec.name: spec for spec in method_specs()}
    assert set(specs) == {"lora-merge", "lora-merge-composlora"}
    spec = specs["lora-merge-composlora"]
    assert spec.defaults["lora_weight"] == 0.8 and spec.deviations
    assert specs["lora-merge"].defaults == DEFAULTS
    bench_spec = load_spec(REPO / "datasets" / "random.yaml")
    assets = AssetResolver(bench_spec, None)
    ctx = RunContext(bench_spec, assets)
    scene = bench_spec.scenes["cat_dog"]
    seed, steps = 5, 3
    reference = copy.deepcopy(ctx.base_pipeline(scene.style))
    for concept in scene.concept_ids:
        merge_by_hand(reference, assets.lora_path(concept), 0.8)
    latents = initial_noise(seed, (1, 4, scene.height // 8, scene.width // 8))
    expected = reference(
        prompt=scene.prompt, negative_prompt=scene.negative_prompt, latents=latents, num_inference_steps=steps,
        guidance_scale=7.5, height=scene.height, width=scene.width, output_type="np",
    ).images[0]
    generation = spec.create(spec.resolve_params({"steps": steps})).generate(scene, seed, ctx)
    got = np.asarray(generation.image, dtype=np.float32) / 255
    assert np.abs(got - expected).max() <= 1 / 255 + 1e-6
    assert generation.record["lora_weight"] == 0.8
    assert "deviations" not in generation.record and spec.deviations  # the runner writes them
