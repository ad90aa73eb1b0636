"""Mix-of-Show: gradient fusion, the fused-model cache, regional sampling (shared with LoRA-Composer), adapters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, T2IAdapter

from baselines.mixofshow.cache import cached_fusion
from baselines.mixofshow.fusion import FusionConcept, FusionConfig, gradient_fusion, weights_applied
from baselines.mixofshow.method import sampling_scheduler
from baselines.mixofshow.sampling import RegionPrompt, mixofshow_settings, prepare_fused_layout, regional_sample
from bench.assets import AssetResolver
from bench.boxes import box_to_grid
from bench.context import RunContext
from bench.layers import cross_attention_layers
from bench.lora.apply import lora_merged
from bench.lora.canonical import ConceptLora, LoraDelta
from bench.pipelines import load_base_model
from bench.plugins import get_plugin_manager, registered_methods
from bench.prompts import LayerwiseTextEncoder
from bench.seeds import initial_noise
from bench.spec import load_spec
from composer.config import ComposerConfig
from composer.guidance import composer_sampler
from composer.layout import RegionInput, prepare_layout
from randomworld.loras import random_concept_lora
from randomworld.models import build_random_adapter, build_random_pipeline
from regions.adapters import adapter_residuals
from regions.controller import Controller
from regions.processors import region_processors
from regions.sampler import RegionSampler
from tests.conftest import REPO, at_once, slowed

SPATIAL = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q")
CONFIG = FusionConfig(text_iters=60, unet_iters=30, spatial_steps=2, spatial_height=64, spatial_width=64)


pytestmark = pytest.mark.usefixtures("one_thread")

def _concept(pipe, seed: int, tokens: list[str]) -> FusionConcept:
    """An ED-LoRA-shaped concept with deltas on every attention linear (spatial layers included)."""
    lora = random_concept_lora(pipe.unet, pipe.text_encoder, tokens, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    extra = {}
    for name, module in pipe.unet.named_modules():
        if name.endswith(SPATIAL):
            extra[name] = LoraDelta(torch.randn(4, module.in_features, generator=g) * 0.16,
                                    torch.randn(module.out_features, 4, generator=g) * 0.16)
    full = ConceptLora(unet={**lora.unet, **extra}, text_encoder=lora.text_encoder,
                       token_embeddings=lora.token_embeddings, source=f"test:{seed}")
    return FusionConcept(full, tuple(tokens))


@pytest.fixture(scope="module")
def concepts(pipe) -> list[FusionConcept]:
    return [_concept(pipe, 1, ["<a1>", "<a2>"]), _concept(pipe, 2, ["<b1>", "<b2>"])]


@pytest.fixture(scope="module")
def fused_two(pipe, concepts):
    return gradient_fusion(pipe, concepts, CONFIG, progress=False)


def _text_output(pipe, concept: FusionConcept, text_lora: ConceptLora | None = None) -> torch.Tensor:
    """Text-encoder output on the concept's fusion prompt at the unpadded positions (those fusion saw)."""
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    prompt = f"photo of a {concept.phrase}"
    n = len(encoder.tokenizer_for(list(concept.tokens))(prompt).input_ids)
    return encoder.encode(prompt, concepts=[concept.lora], text_lora=text_lora)[:, :n]


def _kv_inputs(pipe, fused, concept: FusionConcept) -> torch.Tensor:
    """The fused text encoder's outputs at the concept tokens and EOS, ``[layers, rows, D]`` (K/V-stage X)."""
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    tokenizer = encoder.tokenizer_for(list(concept.tokens))
    rows = []
    with weights_applied(None, pipe.text_encoder, {}, fused.text_encoder):
        for prompt in (f"photo of a {concept.phrase}", concept.phrase):
            ids = tokenizer(prompt).input_ids
            keep = [i for i, t in enumerate(ids) if t >= tokenizer.eos_token_id]
            rows.append(encoder.encode(prompt, concepts=[fused.tokens_concept()])[:, keep])
    return torch.cat(rows, dim=1)


def test_fusion_of_one_concept_reproduces_its_merged_model(pipe, concepts) -> None:
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    concept = concepts[0]
    fused = gradient_fusion(pipe, [concept], CONFIG, progress=False)
    assert {k.split(":")[0] for k in fused.fits} == {"text_encoder", "cross_kv", "spatial"}
    assert len(fused.fits) == 8 + 32 + 96  # 2 CLIP layers x 4, 16 attn2 x (k, v), 16 blocks x 6 spatial
    for name, fit in fused.fits.items():  # on the recorded activations, fused outputs = merged outputs
        assert fit.start > 0 and fit.best <= 1e-2 * fit.start, name
    # the fused text encoder reproduces the concept's merged text encoder on its prompt
    with weights_applied(None, pipe.text_encoder, {}, fused.text_encoder):
        fused_out = _text_output(pipe, concept)
    merged_out = _text_output(pipe, concept, text_lora=concept.lora)
    base_out = _text_output(pipe, concept)
    assert (fused_out - merged_out).norm() < 1e-2 * (base_out - merged_out).norm()
    # the fused K/V reproduce the merged K/V on the concept-token encodings (upstream's stage 3)
    x = _kv_inputs(pipe, fused, concept)
    for index, layer in enumerate(cross_attention_layers(pipe.unet)):
        for proj in ("to_k", "to_v"):
            w0 = pipe.unet.get_submodule(f"{layer}.{proj}").weight
            target = x[index] @ (w0 + concept.lora.unet[f"{layer}.{proj}"].weight()).T
            got = x[index] @ fused.unet[f"{layer}.{proj}"].T
            assert (got - target).norm() <= 1e-3 * target.norm()
    after = pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # base weights restored


def test_fusion_of_two_concepts_lowers_the_objective_and_keeps_each_concept(pipe, concepts, fused_two) -> None:
    summary = fused_two.fit_summary()
    for stage in ("text_encoder", "cross_kv", "spatial"):
        assert summary[f"{stage}_fused"] < 0.7 * summary[f"{stage}_start"], stage
    assert all(fit.best <= fit.start for fit in fused_two.fits.values())
    assert set(fused_two.token_embeddings) == {"<a1>", "<a2>", "<b1>", "<b2>"}
    for concept in concepts:
        with weights_applied(None, pipe.text_encoder, {}, fused_two.text_encoder):
            fused_out = _text_output(pipe, concept)
        merged_out = _text_output(pipe, concept, text_lora=concept.lora)
        assert (fused_out - merged_out).norm() < 0.9 * (_text_output(pipe, concept) - merged_out).norm()
        x = _kv_inputs(pipe, fused_two, concept)  # 12 rows < 32 dims: both concepts fit almost exactly
        for index, layer in enumerate(cross_attention_layers(pipe.unet)):
            w0 = pipe.unet.get_submodule(f"{layer}.to_k").weight
            target = x[index] @ (w0 + concept.lora.unet[f"{layer}.to_k"].weight()).T
            got = x[index] @ fused_two.unet[f"{layer}.to_k"].T
            assert (got - target).norm() <= 0.05 * (x[index] @ w0.T - target).norm()


def test_fusion_records_text_activations_at_text_alpha(pipe, concepts) -> None:
    """research_branch@27213c5 scripts/mixofshow_scripts/Gradient_Fusion_EDLoRA.py L447-464 (merge_text_encoder):
    each concept's text LoRA is merged at its text_encoder_alpha (L449-456) before the activations are recorded
    (L462-464), the alpha its targets use; so the fused text encoder reproduces the concept's model at that alpha.
    Before: activations at alpha 1, targets at text_alpha."""
    concept = concepts[0]
    config = FusionConfig(text_iters=60, unet_iters=1, spatial_steps=1, spatial_height=64, spatial_width=64,
                          text_alpha=0.5)
    fused = gradient_fusion(pipe, [concept], config, progress=False)
    with weights_applied(None, pipe.text_encoder, {}, fused.text_encoder):
        fused_out = _text_output(pipe, concept)
    text_only = ConceptLora(text_encoder=concept.lora.text_encoder, source="text only")
    with lora_merged(None, pipe.text_encoder, [text_only], [0.5]):
        merged_out = _text_output(pipe, concept)
    base_out = _text_output(pipe, concept)
    assert (fused_out - merged_out).norm() < 1e-2 * (base_out - merged_out).norm()


def test_regional_sampler_uses_the_scheduler_the_base_model_ships(tmp_path) -> None:
    """research_branch@27213c5 inference/mix_of_show_sample.py L166-168 (build_model): the pipeline is
    from_pretrained(pretrained_model) without a scheduler, so regional sampling uses the model folder's own (PNDM
    for ChilloutMix), which the bench's loader replaces by DPM-Solver++ for the other methods."""
    source = build_random_pipeline()
    source.scheduler = PNDMScheduler.from_config(source.scheduler.config, skip_prk_steps=True)
    source.save_pretrained(tmp_path / "base")
    pipe = load_base_model(str(tmp_path / "base"))
    assert type(pipe.scheduler) is DPMSolverMultistepScheduler
    scheduler, record = sampling_scheduler(pipe, "model")
    assert type(scheduler) is PNDMScheduler and scheduler.config.skip_prk_steps
    assert (record["name"], record["shipped"], record["choice"]) == ("PNDMScheduler", "PNDMScheduler", "model")
    assert record["config"]["beta_schedule"] == "scaled_linear"
    assert type(sampling_scheduler(pipe, "dpm-solver++")[0]) is DPMSolverMultistepScheduler  # main branch
    assert type(sampling_scheduler(pipe, "ddim")[0]) is DDIMScheduler
    assert sampling_scheduler(pipe, "model")[0] is not scheduler  # a fresh one per image
    builtin = build_random_pipeline()  # a built-in ships the scheduler it has
    assert type(sampling_scheduler(builtin, "model")[0]) is type(builtin.scheduler)
    with pytest.raises(ValueError, match=r"mix-of-show parameter 'scheduler': expected one of \['model'"):
        sampling_scheduler(pipe, "euler")
    layout = prepare_fused_layout(pipe, ConceptLora(source="none"), "a photo", "", [])
    noise = initial_noise(0, (1, 4, 8, 8))
    regional_sample(pipe, layout, noise, 2, 7.5, scheduler=scheduler)
    assert scheduler.num_inference_steps == 2  # the sampler ran on the scheduler it was given


def test_fusion_cache_is_keyed_and_atomic(pipe, concepts, tmp_path) -> None:
    config = FusionConfig(text_iters=3, unet_iters=2, spatial_steps=1, spatial_height=64, spatial_width=64)
    first, key, hit = cached_fusion(pipe, concepts[:1], config, root=tmp_path, progress=False)
    again, key2, hit2 = cached_fusion(pipe, concepts[:1], config, root=tmp_path, progress=False)
    assert (hit, hit2, key2) == (False, True, key)
    assert all(torch.equal(first.unet[k], again.unet[k]) for k in first.unet)
    assert sorted(p.name for p in tmp_path.iterdir()) == [key, f"{key}.lock"]  # no temporary folder left behind
    _, other, _ = cached_fusion(pipe, concepts[:1], FusionConfig(**{**config.__dict__, "unet_alpha": 0.5}),
                                root=tmp_path, progress=False)
    assert other != key


def test_callers_fusing_at_once_fuse_once_and_share_the_result(pipe, concepts, tmp_path, monkeypatch) -> None:
    from baselines.mixofshow import cache

    config = FusionConfig(text_iters=3, unet_iters=2, spatial_steps=1, spatial_height=64, spatial_width=64)
    calls: list[int] = []
    monkeypatch.setattr(cache, "gradient_fusion", slowed(cache.gradient_fusion, calls))
    results = at_once(lambda: cached_fusion(pipe, concepts[:1], config, root=tmp_path, progress=False))
    assert len(calls) == 1 and sorted(hit for _, _, hit in results) == [False, True]
    (first, _, _), (second, _, _) = results
    assert all(torch.equal(first.unet[k], second.unet[k]) for k in first.unet)


def test_mixofshow_and_composer_regional_sampling_agree_on_the_same_region_keys_values(pipe) -> None:
    # One region covering the image: the region path is the whole output. The fused model is the base
    # with exactly this concept merged, so Mix-of-Show's region K/V/out (fused weights) equal
    # LoRA-Composer's (base + the concept's low-rank deltas), and the region text encodings match too.
    lora = random_concept_lora(pipe.unet, pipe.text_encoder, ["<a1>", "<a2>"], seed=3)
    box, prompt, negative = (0.0, 0.0, 1.0, 1.0), "a photo of <a1> <a2>", "blurry"
    noise = initial_noise(4, (1, 4, 8, 16))
    layout = prepare_layout(pipe, "a cat", "low quality", [RegionInput(box, prompt, lora, ("<a1>", "<a2>"), negative)])
    off = ComposerConfig(num_steps=3, concept_enhancement=False, concept_isolation=False, latent_reinit=False)
    composer = composer_sampler(pipe.unet, type(pipe.scheduler).from_config(pipe.scheduler.config), layout, off)(noise)
    with lora_merged(pipe.unet, pipe.text_encoder, [lora], [1.0]):
        fused_layout = prepare_fused_layout(pipe, lora, "a cat", "low quality", [RegionPrompt(box, prompt, negative)])
        mixofshow = regional_sample(pipe, fused_layout, noise, 3, 7.5)
    torch.testing.assert_close(mixofshow, composer.latents, rtol=1e-4, atol=1e-4)


class _UpstreamRewrite:
    """Independent reference of Mix-of-Show's attn2 rewrite (count-map average, then ``to_out``)."""

    def __init__(self, index: int, glob: torch.Tensor, regions: torch.Tensor, boxes, latent_hw):
        self.index, self.glob, self.regions, self.boxes, self.latent_hw = index, glob, regions, boxes, latent_hw

    @staticmethod
    def _attend(attn, q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = attn.to_k(context), attn.to_v(context)
        b, n, c = q.shape
        split = lambda x: x.view(b, -1, attn.heads, c // attn.heads).transpose(1, 2)  # noqa: E731
        out = F.softmax(split(q) @ split(k).transpose(-1, -2) * attn.scale, dim=-1) @ split(v)
        return out.transpose(1, 2).reshape(b, n, c)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        q = attn.to_q(hidden_states)
        out = self._attend(attn, q, self.glob[:, self.index])
        h, w = self.latent_hw
        while h * w > q.shape[1]:
            h, w = -(-h // 2), -(-w // 2)
        total, count = torch.zeros_like(out).view(-1, h, w, out.shape[-1]), torch.zeros(h, w)
        for r, box in enumerate(self.boxes):
            y0, y1, x0, x1 = box_to_grid(box, h, w)
            region = self._attend(attn, q, self.regions[r][:, self.index]).view(-1, h, w, out.shape[-1])
            total[:, y0:y1, x0:x1] += region[:, y0:y1, x0:x1]
            count[y0:y1, x0:x1] += 1
        inside = (count > 0).view(1, h * w, 1)
        averaged = (total / count.clamp(min=1)[None, :, :, None]).view_as(out)
        return attn.to_out[0](torch.where(inside, averaged, out))


def test_fused_region_rewrite_matches_an_independent_upstream_reference(pipe) -> None:
    tokens = random_concept_lora(pipe.unet, pipe.text_encoder, ["<a1>", "<a2>"], seed=5)
    regions = [RegionPrompt((0.0, 0.0, 0.6, 1.0), "a <a1> <a2>", "bad"), RegionPrompt((0.4, 0.2, 1.0, 1.0), "a dog")]
    layout = prepare_fused_layout(pipe, tokens, "a cat and a dog", "low quality", regions)
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    glob = torch.stack([encoder.encode("low quality"), encoder.encode("a cat and a dog")])
    region_embeds = [torch.stack([encoder.encode(r.negative_prompt), encoder.encode(r.prompt, concepts=[tokens])])
                     for r in regions]
    latents, t = torch.cat([initial_noise(6, (1, 4, 8, 16))] * 2), torch.tensor(500)
    states = layout.encoder_states
    controller = Controller(boxes=layout.boxes, latent_hw=(8, 16), layers=layout.caches, region_mask=False)
    with torch.no_grad(), region_processors(pipe.unet, controller):
        got = pipe.unet(latents, t, encoder_hidden_states=states).sample
    original = pipe.unet.attn_processors
    index = {n: i for i, n in enumerate(cross_attention_layers(pipe.unet))}
    boxes = [r.box for r in regions]
    pipe.unet.set_attn_processor({
        k: _UpstreamRewrite(index[k.removesuffix(".processor")], glob, region_embeds, boxes, (8, 16))
        if k.removesuffix(".processor") in index else p for k, p in original.items()})
    try:
        with torch.no_grad():
            expected = pipe.unet(latents, t, encoder_hidden_states=states).sample
    finally:
        pipe.unet.set_attn_processor(original)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_adapter_features_only_inside_weighted_boxes_and_on_every_step(pipe) -> None:
    adapter = T2IAdapter(in_channels=1, channels=list(pipe.unet.config.block_out_channels), num_res_blocks=1,
                         downscale_factor=8, adapter_type="full_adapter")
    image = torch.rand(1, 1, 64, 128)
    boxes = [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)]
    features = adapter_residuals({"sketch": adapter}, {"sketch": image}, boxes, [{"sketch": 0.8}, {}],
                                 {"sketch": 0.0})
    raw = adapter(image)
    for feature, plain in zip(features, raw, strict=True):
        h, w = feature.shape[-2:]
        y0, y1, x0, x1 = box_to_grid(boxes[0], h, w)
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.all(feature[..., ~inside] == 0)
        torch.testing.assert_close(feature[..., inside], 0.8 * plain[..., inside])
    tokens = ConceptLora()
    layout = prepare_fused_layout(pipe, tokens, "a cat", "", [RegionPrompt(b, "a cat") for b in boxes], features)
    sampler = RegionSampler(pipe.unet, type(pipe.scheduler).from_config(pipe.scheduler.config), layout,
                            mixofshow_settings(num_steps=3))
    result = sampler(initial_noise(1, (1, 4, 8, 16)))
    assert result.log["adapter_steps"] == [0, 1, 2] and "refine_steps" not in result.log  # no guidance


def test_method_generates_with_cached_fusion_and_leaves_the_pipeline_unchanged(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("LCBENCH_PLUGINS", "baselines.plugin")
    spec = load_spec(REPO / "datasets" / "random.yaml")
    ctx = RunContext(spec, AssetResolver(spec))
    scene = spec.scenes["man_dog_cat_castle"]
    pipe = ctx.base_pipeline(scene.style)
    before = {k: v.clone() for k, v in {**pipe.unet.state_dict(), **pipe.text_encoder.state_dict()}.items()}
    method_spec = registered_methods(get_plugin_manager())["mix-of-show"]
    params = method_spec.resolve_params({"steps": 2, "text_iters": 3, "unet_iters": 2, "spatial_steps": 1,
                                         "spatial_size": 64, "fuse": "scene"})
    first = method_spec.create(params).generate(scene, 7, ctx)
    second = method_spec.create(params).generate(scene, 7, ctx)  # a new method object: the disk cache
    assert first.image.size == (scene.width, scene.height)
    assert (first.record["fusion_cache_hit"], second.record["fusion_cache_hit"]) == (False, True)
    assert first.record["fusion_key"] == second.record["fusion_key"]
    assert first.record["branch"] == "research" and method_spec.deviations
    assert first.record["scheduler"] == "DPMSolverMultistepScheduler"  # the scheduler builtin:random-sd ships
    assert first.record["sampler"]["choice"] == "model"
    assert first.record["sampler"]["shipped"] == first.record["scheduler"]
    assert set(first.record["fused_concepts"]) == {"man", "dog", "cat", "castle"}
    assert list(first.image.getdata()) == list(second.image.getdata())
    after = {**pipe.unet.state_dict(), **pipe.text_encoder.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_adapter_method_uses_builtin_adapters_and_equals_mix_of_show_without_conditions(monkeypatch, tmp_path):
    monkeypatch.setenv("LCBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LCBENCH_PLUGINS", "baselines.plugin")
    spec = load_spec(REPO / "datasets" / "random.yaml")
    ctx = RunContext(spec, AssetResolver(spec))
    methods = registered_methods(get_plugin_manager())
    small = {"steps": 2, "text_iters": 2, "unet_iters": 2, "spatial_steps": 1, "spatial_size": 64, "fuse": "scene"}
    star, plain = methods["mix-of-show-adapter"], methods["mix-of-show"]
    assert (star.defaults["sketch_adapter"], star.defaults["pose_adapter"]) == ("auto", "auto")
    adapter_method = star.create(star.resolve_params(small))
    plain_method = plain.create(plain.resolve_params(small))
    # A scene without conditions: exactly mix-of-show, and the record says so.
    no_conditions = spec.scenes["man_dog_cat_castle"]
    assert not no_conditions.conditions
    unguided = adapter_method.generate(no_conditions, 7, ctx)
    reference = plain_method.generate(no_conditions, 7, ctx)
    assert unguided.record["adapters"] == {}
    assert unguided.record["adapter_note"] == "scene has no image condition: sampled without adapter"
    assert list(unguided.image.getdata()) == list(reference.image.getdata())
    # The guided scene: the built-in pose and sketch adapters, and a different image than mix-of-show's.
    scene = spec.scenes["man_dog_cat_guided"]
    guided = adapter_method.generate(scene, 7, ctx)
    reference = plain_method.generate(scene, 7, ctx)
    assert guided.record["adapters"] == {"sketch": "builtin:random-t2i-sketch", "pose": "builtin:random-t2i-pose"}
    assert guided.record["adapter_note"] is None and reference.record["adapters"] == {}
    assert guided.record["fusion_key"] == reference.record["fusion_key"]
    assert list(guided.image.getdata()) != list(reference.image.getdata())
    # A diffusers folder holding the built-in sketch adapter gives the same image as the built-in ref.
    build_random_adapter("sketch").save_pretrained(tmp_path / "sketch")
    only_sketch = {**small, "pose_adapter": "none"}
    from_folder = star.create(star.resolve_params({**only_sketch, "sketch_adapter": str(tmp_path / "sketch")}))
    folder_image = from_folder.generate(scene, 7, ctx)
    builtin_image = star.create(star.resolve_params(only_sketch)).generate(scene, 7, ctx)
    assert folder_image.record["adapters"] == {"sketch": str(tmp_path / "sketch")}
    assert builtin_image.record["adapters"] == {"sketch": "builtin:random-t2i-sketch"}
    assert list(folder_image.image.getdata()) == list(builtin_image.image.getdata())
    assert list(folder_image.image.getdata()) != list(guided.image.getdata())  # the pose adapter mattered


def test_adapter_method_auto_with_a_real_base_model_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("LCBENCH_PLUGINS", "baselines.plugin")
    spec = load_spec(REPO / "datasets" / "random.yaml")
    ctx = RunContext(spec, AssetResolver(spec))
    monkeypatch.setattr(ctx.assets, "base_model_ref", lambda style: "/models/sd15")
    star = registered_methods(get_plugin_manager())["mix-of-show-adapter"]
    with pytest.raises(ValueError, match=r"mix-of-show-adapter: scene 'man_dog_cat_guided' .* parameters "
                                         r"'sketch_adapter', 'pose_adapter' are 'auto'.*local diffusers T2IAdapter "
                                         r"folder \(e\.g\. TencentARC t2iadapter_sketch_sd14v1"):
        star.create(star.defaults).generate(spec.scenes["man_dog_cat_guided"], 7, ctx)
    folder_missing = star.create(star.resolve_params({"sketch_adapter": "/nowhere", "pose_adapter": "none"}))
    with pytest.raises(ValueError, match=r"mix-of-show-adapter parameter 'sketch_adapter': '/nowhere' is not a "
                                         r"local T2I-Adapter folder"):
        folder_missing.generate(spec.scenes["man_dog_cat_guided"], 7, ctx)
