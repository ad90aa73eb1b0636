"""LoRA switch / composite / naive regional: against diffusers' own pipeline with merged LoRAs, and end to end."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch

from baselines.combination import (
    active_lora,
    composite_latents,
    encode_pair,
    regional_latents,
    switch_latents,
    unet_only,
)
from bench.assets import AssetResolver
from bench.context import RunContext
from bench.lora.apply import lora_merged
from bench.plugins import get_plugin_manager, registered_methods
from bench.prompts import LayerwiseState, install_layerwise
from bench.seeds import initial_noise
from bench.spec import load_spec
from randomworld.loras import random_concept_lora
from tests.conftest import REPO

SIZE = {"seed": 3, "width": 128, "height": 64, "steps": 3, "guidance_scale": 7.5}


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def loras(pipe):
    return [random_concept_lora(pipe.unet, pipe.text_encoder, ["<a1>", "<a2>"], seed=1),
            random_concept_lora(pipe.unet, pipe.text_encoder, ["<b1>", "<b2>"], seed=2)]


def _diffusers(pipe, prompt, negative, concepts, schedule, weight: float = 1.0) -> torch.Tensor:
    """diffusers' StableDiffusionPipeline with ``schedule[i]``'s LoRA merged at step i (via step callbacks)."""
    embeds = [encode_pair(pipe, prompt, negative, concepts, text_lora=lora) for lora in concepts]
    state = LayerwiseState(embeds[schedule[0]])
    stack = ExitStack()

    def activate(k: int) -> None:
        stack.close()
        stack.enter_context(lora_merged(pipe.unet, None, [unet_only(concepts[k])], [weight]))
        state.embeddings = embeds[k]

    def callback(pipeline, i, t, kwargs):
        if i + 1 < len(schedule):
            activate(schedule[i + 1])
        return kwargs

    activate(schedule[0])
    noise = initial_noise(SIZE["seed"], (1, 4, SIZE["height"] // 8, SIZE["width"] // 8))
    try:
        with install_layerwise(pipe.unet, state):
            return pipe(prompt_embeds=embeds[0][1:2, 0], negative_prompt_embeds=embeds[0][0:1, 0], latents=noise,
                        num_inference_steps=SIZE["steps"], guidance_scale=SIZE["guidance_scale"],
                        height=SIZE["height"], width=SIZE["width"], output_type="latent",
                        callback_on_step_end=callback).images
    finally:
        stack.close()


def test_one_lora_switch_and_composite_equal_diffusers_with_the_merged_lora(pipe, loras) -> None:
    prompt, negative = "a photo of <a1> <a2>", "blurry"
    expected = _diffusers(pipe, prompt, negative, loras[:1], [0, 0, 0])
    switch = switch_latents(pipe, prompt, negative, loras[:1], 1.0, 1, **SIZE)
    composite = composite_latents(pipe, prompt, negative, loras[:1], 1.0, **SIZE)
    torch.testing.assert_close(switch, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(composite, expected, rtol=1e-4, atol=1e-4)


def upstream_switch_schedule(steps: int, switch_step: int, count: int) -> list[int]:
    """The LoRA active at each step under Multi-LoRA-Composition's switch callback, simulated as written.

    ``callbacks.py`` L6: ``if step_index > 0 and step_index % switch_step == 0:`` switch to the next LoRA,
    in diffusers' ``callback_on_step_end``, i.e. after step ``step_index`` has run.
    """
    active, schedule = 0, []
    for step_index in range(steps):
        schedule.append(active)  # the step runs with the current LoRA, then the callback fires
        if step_index > 0 and step_index % switch_step == 0:
            active = (active + 1) % count
    return schedule


def test_switch_schedule_follows_upstream_callback() -> None:
    for steps, every, count in [(50, 5, 2), (50, 5, 3), (200, 5, 4), (7, 1, 2), (12, 3, 2), (3, 10, 2)]:
        assert [active_lora(i, every, count) for i in range(steps)] == upstream_switch_schedule(steps, every, count)
    # by hand: the first LoRA runs 6 steps (0-5), the next ones 5 each
    assert [active_lora(i, 5, 2) for i in range(17)] == [0] * 6 + [1] * 5 + [0] * 5 + [1]
    assert [active_lora(i, 1, 2) for i in range(5)] == [0, 0, 1, 0, 1]


def test_switch_alternates_the_active_lora(pipe, loras) -> None:
    prompt, negative = "<a1> <a2> and <b1> <b2>", "blurry"
    schedule = upstream_switch_schedule(SIZE["steps"], 1, 2)
    assert schedule == [0, 0, 1]
    expected = _diffusers(pipe, prompt, negative, loras, schedule)
    got = switch_latents(pipe, prompt, negative, loras, 1.0, 1, **SIZE)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(got, _diffusers(pipe, prompt, negative, loras, [0, 0, 0]), atol=1e-3)


def test_composite_averages_the_guided_predictions(pipe, loras) -> None:
    # One DPM-Solver step is affine in the noise prediction, so the composite's step is the mean of the
    # single-LoRA steps (a prompt without concept tokens makes each single run see the same text).
    one = {**SIZE, "steps": 1}
    both = composite_latents(pipe, "a cat and a dog", "blurry", loras, 0.8, **one)
    singles = [composite_latents(pipe, "a cat and a dog", "blurry", [lora], 0.8, **one) for lora in loras]
    torch.testing.assert_close(both, (singles[0] + singles[1]) / 2, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)


def test_regional_box_over_the_image_equals_diffusers_with_that_lora_and_prompt(pipe, loras) -> None:
    prompt, negative = "a photo of <a1> <a2>", "low quality"
    expected = _diffusers(pipe, prompt, negative, loras[:1], [0, 0, 0])
    got = regional_latents(pipe, "a cat", "blurry", [((0.0, 0.0, 1.0, 1.0), prompt, negative, loras[0])], 1.0,
                           **SIZE)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # a box on the left half: after one step (same input everywhere) the right half of the latent is the
    # base model's with the global prompt, the left half is not
    one = {**SIZE, "steps": 1}
    left = regional_latents(pipe, "a cat", "blurry", [((0.0, 0.0, 0.5, 1.0), prompt, negative, loras[0])], 1.0,
                            **one)
    base = regional_latents(pipe, "a cat", "blurry", [], 1.0, **one)
    torch.testing.assert_close(left[..., 8:], base[..., 8:], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(left[..., :8], base[..., :8], atol=1e-3)


def test_methods_are_registered_and_leave_the_shared_pipeline_unchanged(monkeypatch) -> None:
    monkeypatch.setenv("LCBENCH_PLUGINS", "baselines.plugin")
    methods = registered_methods(get_plugin_manager())
    spec = load_spec(REPO / "datasets" / "random.yaml")
    ctx = RunContext(spec, AssetResolver(spec))
    scene = spec.scenes["man_dog_cat_castle"]
    pipe = ctx.base_pipeline(scene.style)
    before = {k: v.clone() for k, v in {**pipe.unet.state_dict(), **pipe.text_encoder.state_dict()}.items()}
    processors = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    for name in ("lora-switch", "lora-composite", "lora-regional"):
        method = methods[name]
        assert method.defaults["steps"] == 50 and method.deviations
        generation = method.create(method.resolve_params({"steps": "2", "switch_every": 1}
                                                         if name == "lora-switch" else {"steps": "2"}))
        result = generation.generate(scene, 7, ctx)
        assert result.image.size == (scene.width, scene.height) and "params" not in result.record
    assert result.record["concepts"] == list(scene.concept_ids)
    with pytest.raises(ValueError, match="lora-switch.prompt"):
        methods["lora-switch"].create(methods["lora-switch"].resolve_params({"prompt": "regions"}))
    after = {**pipe.unet.state_dict(), **pipe.text_encoder.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == processors
