"""Every training stage of the toy world runs end to end (at a tiny scale) and writes loadable weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bench.lora.formats import check_lora_fits, load_lora
from toyworld.classifier import load_classifier
from toyworld.concepts import CONCEPTS
from toyworld.models import MissingWeights, load_toy_pipeline


def _train(stage: str, out, *extra: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "toytrain", stage, "--out", str(out), "--scale", "0.002",
                    "--threads", "1", *extra], check=True, env=env, capture_output=True, timeout=300)


@pytest.mark.slow
def test_all_stages_train_and_load(tmp_path):
    with pytest.raises(MissingWeights, match="python -m toytrain base"):
        load_toy_pipeline(tmp_path)
    _train("vae", tmp_path)
    _train("base", tmp_path, "--schedule", "zero-snr-v", "--word-weight", "0.1")
    for stage in ("classifier", "clip"):
        _train(stage, tmp_path)
    _train("lora", tmp_path, "--concepts", "ruby")
    pipe = load_toy_pipeline(tmp_path)
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 16
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # read from the UNet file; the LoRA trained on it
    lora = load_lora(tmp_path / "loras" / "ruby.safetensors")
    check_lora_fits(lora, pipe.unet, pipe.text_encoder)
    assert set(lora.token_embeddings) == set(CONCEPTS["ruby"].tokens)
    assert load_classifier(tmp_path) is not None
    assert (tmp_path / "clip.safetensors").is_file()
    stages = {json.loads(line)["stage"] for line in (tmp_path / "training.jsonl").read_text().splitlines()}
    assert {"vae-done", "base-done", "lora-ruby-done", "classifier-done", "clip-done"} <= stages


class _Stop(Exception):
    """Stands for the process being killed right after a checkpoint was written."""


def _vae(out, log, ck):
    from toytrain.vae import train_vae

    train_vae(out, seed=1, images=64, crop_steps=3, full_steps=1, log=log, checkpoints=ck, save_every=2)
    return out / "vae.safetensors"


def _classifier(out, log, ck):
    from toytrain.classifier import train_classifier

    train_classifier(out, seed=1, log=log, images=64, epochs=1, batch=16, checkpoints=ck, save_every=2)
    return out / "classifier.safetensors"


def _clip(out, log, ck):
    from toytrain.clip import train_clip

    train_clip(out, seed=1, log=log, pairs=64, steps=3, batch=16, checkpoints=ck, save_every=2)
    return out / "clip.safetensors"


def _base(out, log, ck):
    from toytrain.base import train_base

    train_base(out, seed=1, log=log, images=128, steps=4, batch=4, schedule="zero-snr-v", word_weight=0.1,
               checkpoints=ck, save_every=2)
    return out / "unet.safetensors"


def _lora(out, log, ck):
    from toytrain.lora import train_concept

    return train_concept(CONCEPTS["ruby"], out, seed=3, log=log, weights=None, views=8, steps=4, batch=2,
                         checkpoints=ck, save_every=2, grounding_weight=0.0, distractor_share=0.0)


def _grounded_lora(out, log, ck):
    from toytrain.lora import train_concept

    return train_concept(CONCEPTS["ruby"], out, seed=3, log=log, weights=None, views=8, steps=4, batch=2,
                         checkpoints=ck, save_every=2, grounding_weight=0.2, distractor_share=0.5)


def _text_grounded_lora(out, log, ck):
    from toytrain.lora import train_concept

    return train_concept(CONCEPTS["ruby"], out, seed=3, log=log, weights=None, views=8, steps=4, batch=2,
                         checkpoints=ck, save_every=2, grounding_weight=0.2, grounding_trains="text",
                         distractor_share=0.5)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "train"), [("vae", _vae), ("base", _base), ("classifier", _classifier),
                                              ("clip", _clip), ("lora-ruby", _lora), ("lora-ruby", _grounded_lora),
                                              ("lora-ruby", _text_grounded_lora)])
def test_a_stopped_stage_resumes_to_the_same_weights(stage, train, tmp_path, monkeypatch):
    """Stopped right after its first checkpoint and started again, a training stage writes the same weights
    as an uninterrupted run (tiny sizes; the classifier and CLIP stages read the committed toy VAE)."""
    from safetensors.torch import load_file

    from toytrain.common import Checkpoint, TrainLog
    from toyworld.models import WEIGHTS_DIR

    outs = {name: tmp_path / name for name in ("straight", "resumed")}
    for out in outs.values():
        out.mkdir()
        (out / "vae.safetensors").write_bytes((WEIGHTS_DIR / "vae.safetensors").read_bytes())
    log = TrainLog(tmp_path / "log")
    straight = train(outs["straight"], log, tmp_path / "ck-straight")
    real_save = Checkpoint.save

    def save_then_stop(self, state):
        real_save(self, state)
        raise _Stop

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    before = (outs["resumed"] / straight.name).read_bytes() if stage == "vae" else None
    with pytest.raises(_Stop):
        train(outs["resumed"], log, tmp_path / "ck")
    if before is None:
        assert not (outs["resumed"] / straight.name).exists()
    else:
        assert (outs["resumed"] / straight.name).read_bytes() == before  # the copied VAE, not yet replaced
    assert int(Checkpoint(tmp_path / "ck").load()["step"]) == 2
    monkeypatch.setattr(Checkpoint, "save", real_save)
    resumed = train(outs["resumed"], log, tmp_path / "ck")
    events = [json.loads(line)["stage"] for line in (tmp_path / "log" / "training.jsonl").read_text().splitlines()]
    assert f"{stage}-resume" in events
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "ck" / "state.pt").exists()  # removed once the weights are written
    assert not (tmp_path / "ck").exists() or any((tmp_path / "ck").iterdir())  # an emptied folder goes with it


def test_a_concept_trains_with_the_same_seed_alone_or_with_the_others(monkeypatch, tmp_path):
    """`--concepts jade` trains jade's LoRA from the seed the full run gives it (its place among the world's
    concepts), so a subset run writes the same LoRA and resumes the full run's checkpoint."""
    from toytrain import lora
    from toytrain.common import TrainLog

    seeds: dict[tuple[str, ...], dict[str, int]] = {}

    def record(concept, target, *, seed, **_):
        seeds.setdefault(request, {})[concept.id] = seed

    monkeypatch.setattr(lora, "train_concept", record)
    log = TrainLog(tmp_path / "log")
    for request in ((), ("cobalt", "jade")):
        lora.train_loras(tmp_path, seed=7, log=log, concepts=list(request) or None)
    assert seeds[()] == {concept: 7 + n for n, concept in enumerate(CONCEPTS)}
    assert seeds[("cobalt", "jade")] == {"cobalt": seeds[()]["cobalt"], "jade": seeds[()]["jade"]}


def _save_world(folder, unet, text_encoder) -> None:
    from toyworld.models import SCHEDULES, save_weights, unet_metadata, weights_path

    save_weights(unet, weights_path("unet", folder), unet_metadata(unet, SCHEDULES["zero-snr-v"]))
    save_weights(text_encoder, weights_path("text_encoder", folder))


def test_a_warm_started_base_run_begins_at_the_given_worlds_weights(tmp_path):
    """`--init-from` loads a world's UNet and text encoder: at a vanishing learning rate the run writes them
    back unchanged (their EMA never leaves them); without the warm start its own seed's random weights differ."""
    import shutil

    from safetensors.torch import load_file

    from toytrain.base import train_base
    from toytrain.common import TrainLog
    from toyworld import WEIGHTS_DIR
    from toyworld.models import build_text_encoder, build_unet

    start, out = tmp_path / "start", tmp_path / "out"
    torch.manual_seed(5)
    _save_world(start, build_unet("small"), build_text_encoder())
    out.mkdir()
    shutil.copy(WEIGHTS_DIR / "vae.safetensors", out / "vae.safetensors")
    log = TrainLog(tmp_path / "log")
    train_base(out, seed=1, log=log, images=128, steps=4, batch=4, peak_lr=1e-12, init_from=start,
               checkpoints=tmp_path / "ck", max_objects=4, grounded_layers="all")
    for name in ("unet", "text_encoder"):
        given, written = load_file(str(start / f"{name}.safetensors")), load_file(str(out / f"{name}.safetensors"))
        assert given.keys() == written.keys()
        assert all(torch.equal(given[key], written[key]) for key in given), name
    done = [json.loads(line) for line in (tmp_path / "log" / "training.jsonl").read_text().splitlines()][-1]
    assert done["warm_start"] == str(start) and done["max_objects"] == 4 and done["grounding_layers"] == "all"
    assert [path.name for path in (tmp_path / "ck").glob("data-*")] == ["data-128-2-objects4.safetensors"]


def test_a_warm_start_from_a_unet_of_another_size_names_the_file(tmp_path):
    from toytrain.base import warm_start
    from toyworld.models import build_text_encoder, build_unet

    _save_world(tmp_path, build_unet("small"), build_text_encoder())
    with pytest.raises(SystemExit, match=r"unet\.safetensors' is not a 'wide' UNet"):
        warm_start(build_unet("wide"), build_text_encoder(), tmp_path, "wide")


def test_a_lora_checkpoint_belongs_to_the_base_it_was_trained_on(monkeypatch, tmp_path):
    """The LoRA stage's checkpoint folder names a digest of the base weights (the same weights in other module
    objects give the same digest), so a run on a retrained base starts afresh instead of resuming a LoRA
    half-trained on the old one."""
    from toytrain import lora
    from toytrain.common import TrainLog
    from toytrain.lora import base_digest
    from toyworld.models import build_text_encoder, build_unet

    unet, text_encoder = build_unet("small"), build_text_encoder()
    first = base_digest(unet, text_encoder)
    copies = build_unet("small"), build_text_encoder()
    for copy, original in zip(copies, (unet, text_encoder), strict=True):
        copy.load_state_dict(original.state_dict())
    same = base_digest(*copies)
    with torch.no_grad():
        unet.conv_out.bias.add_(0.5)
    assert first == same != base_digest(unet, text_encoder)

    class Opened(Exception):
        pass

    def opened(stage, folder, *args, **kwargs):
        raise Opened(folder)

    monkeypatch.setattr(lora, "ResumableLoop", opened)
    with pytest.raises(Opened) as stopped:
        lora.train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=2, steps=1,
                           batch=1, grounding_weight=0.0, distractor_share=0.0)
    committed = load_toy_pipeline()
    assert stopped.value.args[0].name == f"lora-ruby-1-seed3-base{base_digest(committed.unet, committed.text_encoder)}"
    with pytest.raises(Opened) as grounded:
        lora.train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=2, steps=1,
                           batch=1, grounding_weight=0.2, distractor_share=0.0)
    assert grounded.value.args[0].name == f"{stopped.value.args[0].name}-grounding0.2"  # never resumes the other
    with pytest.raises(Opened) as crowded:
        lora.train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=2, steps=1,
                           batch=1, grounding_weight=0.2, distractor_share=0.5)
    assert crowded.value.args[0].name == f"{grounded.value.args[0].name}-distractors0.5"
    with pytest.raises(Opened) as text_only:
        lora.train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=2, steps=1,
                           batch=1, grounding_weight=0.2, grounding_trains="text", distractor_share=0.0)
    assert text_only.value.args[0].name == f"{grounded.value.args[0].name}-text"
    with pytest.raises(Opened) as disjoint:
        lora.train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=2, steps=1,
                           batch=1, grounding_weight=0.0, distractor_share=0.5, distractors="disjoint")
    assert disjoint.value.args[0].name == f"{stopped.value.args[0].name}-distractors0.5-disjoint"
    with pytest.raises(Opened) as cross:
        lora.train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=2, steps=1,
                           batch=1, grounding_weight=0.0, distractor_share=0.0, unet_targets="cross-kvo")
    assert cross.value.args[0].name == f"{stopped.value.args[0].name}-unet-cross-kvo"
    with pytest.raises(Opened) as smaller:
        lora.train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=2, steps=1,
                           batch=1, grounding_weight=0.0, distractor_share=0.0, view_sizes="among-others")
    assert smaller.value.args[0].name == f"{stopped.value.args[0].name}-views-among-others"


def test_the_lora_stage_passes_its_grounding_weight_and_distractor_share_to_every_concept(monkeypatch, tmp_path):
    """`--grounding-weight`, `--grounding-trains`, `--distractor-share`, `--distractors`, `--unet-targets`,
    `--unet-lora-lr` and `--view-sizes` reach every concept the stage trains; without them, the committed recipe's
    values."""
    from toytrain import (
        LORA_DISTRACTOR_SHARE,
        LORA_DISTRACTORS,
        LORA_GROUNDING_TRAINS,
        LORA_GROUNDING_WEIGHT,
        LORA_UNET_LR,
        LORA_UNET_TARGETS,
        LORA_VIEW_SIZES,
        lora,
    )
    from toytrain.cli import main

    options: list[tuple[float, str, float, str, str, float, str]] = []
    monkeypatch.setattr(lora, "train_concept",
                        lambda *a, grounding_weight, grounding_trains, distractor_share, distractors, unet_targets,
                        unet_lr, view_sizes, **k: options.append((grounding_weight, grounding_trains,
                                                                  distractor_share, distractors, unet_targets,
                                                                  unet_lr, view_sizes)))
    main(["lora", "--out", str(tmp_path), "--threads", "1", "--concepts", "ruby,jade", "--grounding-weight", "0.3",
          "--grounding-trains", "text", "--distractor-share", "0.25", "--distractors", "disjoint",
          "--unet-targets", "cross-kvo", "--unet-lora-lr", "3e-4", "--view-sizes", "among-others"])
    main(["lora", "--out", str(tmp_path), "--threads", "1", "--concepts", "amber"])
    assert options == [(0.3, "text", 0.25, "disjoint", "cross-kvo", 3e-4, "among-others")] * 2 + [
        (LORA_GROUNDING_WEIGHT, LORA_GROUNDING_TRAINS, LORA_DISTRACTOR_SHARE, LORA_DISTRACTORS, LORA_UNET_TARGETS,
         LORA_UNET_LR, LORA_VIEW_SIZES)]


def test_the_base_stages_caption_object_and_grounding_options_reach_the_trainer(monkeypatch, tmp_path):
    """`--shape-only-share`, `--max-objects` and `--grounding-layers` reach `train_base`; without them, the
    committed world's values."""
    from toytrain import base
    from toytrain.cli import main

    options: list[tuple[float, int, str]] = []
    monkeypatch.setattr(base, "train_base", lambda *a, shape_only_share, max_objects, grounded_layers, **k:
                        options.append((shape_only_share, max_objects, grounded_layers)))
    main(["base", "--out", str(tmp_path), "--threads", "1", "--shape-only-share", "0.3", "--max-objects", "4",
          "--grounding-layers", "all"])
    main(["base", "--out", str(tmp_path), "--threads", "1"])
    assert options == [(0.3, 4, "all"), (0.0, 3, "last")]
    for bad in (["--max-objects", "5"], ["--grounding-layers", "first"]):
        with pytest.raises(SystemExit):
            main(["base", "--out", str(tmp_path), *bad])


def test_unknown_unet_targets_and_view_sizes_are_refused_before_any_training(tmp_path):
    """An unknown `unet_targets` or `view_sizes` raises one ValueError naming the expected values."""
    from toytrain.common import TrainLog
    from toytrain.lora import train_concept

    with pytest.raises(ValueError, match=r"unet_targets: expected one of \('all', 'cross-kvo'\), got 'attn1'"):
        train_concept(CONCEPTS["ruby"], tmp_path, seed=0, log=TrainLog(tmp_path), weights=None,
                      unet_targets="attn1")
    with pytest.raises(ValueError, match=r"view_sizes: expected one of \('alone', 'among-others'\), got 'tiny'"):
        train_concept(CONCEPTS["ruby"], tmp_path, seed=0, log=TrainLog(tmp_path), weights=None, view_sizes="tiny")
    assert not any(tmp_path.iterdir())


def test_the_unet_lora_learning_rate_scales_the_unet_loras_first_step_and_nothing_else(one_thread, tmp_path):
    """One step from peft's zero-initialised `lora_B`: Adam moves each UNet `lora_up` by the learning rate times a
    gradient-only factor, so `unet_lr=3e-4` writes exactly 0.3 times the default's UNet `lora_up` weights, and the
    same `lora_down`, text-encoder LoRA and token embeddings (a learning rate of 0 is refused)."""
    from safetensors.torch import load_file

    from toytrain import LORA_UNET_LR
    from toytrain.common import TrainLog
    from toytrain.lora import train_concept

    def one_step(name: str, **recipe) -> dict[str, torch.Tensor]:
        folder = tmp_path / name
        path = train_concept(CONCEPTS["ruby"], folder, seed=3, log=TrainLog(folder), weights=None, views=4, steps=1,
                             batch=2, checkpoints=folder / "ck", grounding_weight=0.1, **recipe)
        return load_file(str(path))

    default, lower = one_step("default"), one_step("lower", unet_lr=0.3 * LORA_UNET_LR)
    assert default.keys() == lower.keys()
    scaled = [key for key in default if key.startswith("params.unet.") and key.endswith("lora_up.weight")]
    assert scaled and all(float(default[key].abs().max()) > 0 for key in scaled)
    for key in default:
        expected = 0.3 * default[key] if key in scaled else default[key]
        torch.testing.assert_close(lower[key], expected, rtol=1e-5, atol=1e-9, msg=key)
    with pytest.raises(ValueError, match="unet_lr: expected a learning rate above 0, got 0"):
        one_step("zero", unet_lr=0)


def test_a_cross_kvo_lora_holds_exactly_what_lora_composers_regions_read(one_thread, tmp_path):
    """`unet_targets="cross-kvo"` writes UNet deltas on every cross-attention layer's key, value and output
    projection and nowhere else: the deltas LoRA-Composer's region injection reads (`regions.sources.ConceptDeltas`),
    none of the ones it leaves unread (attn1, to_q); the file loads and fits the toy UNet as the bench loads it."""
    from bench.layers import cross_attention_layers
    from regions.sources import ConceptDeltas
    from toytrain.common import TrainLog
    from toytrain.lora import train_concept

    path = train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=4, steps=1,
                         batch=1, checkpoints=tmp_path / "ck", distractor_share=0.0, unet_targets="cross-kvo")
    pipe = load_toy_pipeline()
    lora = load_lora(path)
    check_lora_fits(lora, pipe.unet, pipe.text_encoder)
    layers, projections = cross_attention_layers(pipe.unet), ("to_k", "to_v", "to_out.0")
    assert set(lora.unet) == {f"{layer}.{projection}" for layer in layers for projection in projections}
    assert all(delta is not None for layer in layers for projection in projections
               for delta in ConceptDeltas([lora]).deltas(layer, projection))
    assert lora.text_encoder and set(lora.token_embeddings) == set(CONCEPTS["ruby"].tokens)


def _first_step_gradients(monkeypatch, tmp_path, **recipe) -> list[torch.Tensor]:
    """The gradient of every trainable tensor at the LoRA stage's first optimizer step, in the optimizer's order
    (token embeddings, UNet LoRAs, text-encoder LoRAs)."""
    from toytrain.common import TrainLog
    from toytrain.lora import train_concept

    class Stepped(Exception):
        pass

    def record(optimizer, *args, **kwargs):
        raise Stepped([p.grad.clone() for group in optimizer.param_groups for p in group["params"]])

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    with pytest.raises(Stepped) as stepped:
        train_concept(CONCEPTS["ruby"], tmp_path, seed=3, log=TrainLog(tmp_path), weights=None, views=4, steps=1,
                      batch=2, checkpoints=tmp_path / "ck", distractor_share=0.5, **recipe)
    return stepped.value.args[0]


def test_grounding_that_trains_the_text_side_leaves_the_unet_lora_to_the_denoising_loss(one_thread, monkeypatch,
                                                                                         tmp_path):
    """With `grounding_trains="text"` the UNet LoRAs get the denoising loss's gradient alone (as without grounding)
    and the token embeddings and text-encoder LoRAs the same gradient as when the grounding loss trains everything."""
    from peft import LoraConfig, inject_adapter_in_model

    from toytrain.lora import RANK, UNET_TARGETS

    unet = load_toy_pipeline().unet
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=UNET_TARGETS), unet)
    unet_count = sum("lora_" in name for name, _ in unet.named_parameters())
    plain = _first_step_gradients(monkeypatch, tmp_path / "plain", grounding_weight=0.0)
    everything = _first_step_gradients(monkeypatch, tmp_path / "all", grounding_weight=0.2, grounding_trains="all")
    text = _first_step_gradients(monkeypatch, tmp_path / "text", grounding_weight=0.2, grounding_trains="text")

    def gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))

    unet_part, text_part = slice(1, 1 + unet_count), [0, *range(1 + unet_count, len(plain))]
    assert len(plain) == len(everything) == len(text) > 1 + unet_count
    assert gap(text[unet_part], plain[unet_part]) < 1e-5 < gap(everything[unet_part], plain[unet_part]) / 10
    side = [[grads[i] for i in text_part] for grads in (plain, everything, text)]
    assert gap(side[2], side[1]) < 1e-5 < gap(side[2], side[0]) / 10
    with pytest.raises(ValueError, match="grounding_trains: expected one of"):
        _first_step_gradients(monkeypatch, tmp_path / "bad", grounding_weight=0.2, grounding_trains="unet")


def test_the_base_grounding_reads_the_last_layer_of_each_grid_or_every_layer(tmp_path):
    """`grounding_layers`: "last" keeps the last installed 16x16 and 8x8 cross-attention layer (the committed
    world's two), "all" every one of 8x8 or finer; another name is refused, before training, by `train_base` too."""
    from bench.layers import cross_attention_layers
    from toytrain.base import grounding_layers, install_grounding, train_base
    from toyworld.models import build_unet

    unet = build_unet("small")
    names = cross_attention_layers(unet)
    installed = install_grounding(unet, lambda index: names[index])
    assert len(installed) > 2 and sorted({resolution for resolution, _ in installed}) == [8, 16]
    last = {resolution: name for resolution, name in installed}
    assert grounding_layers(installed, "last") == [(16, last[16]), (8, last[8])]
    assert grounding_layers(installed, "all") == installed
    with pytest.raises(ValueError, match="grounding_layers: expected one of"):
        grounding_layers(installed, "first")
    with pytest.raises(ValueError, match="grounded_layers: expected one of"):
        train_base(tmp_path, log=None, grounded_layers="first")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_grounded_layerwise_attention_computes_what_the_layerwise_processor_does(one_thread):
    """The LoRA stage's recording processors (8x8 and 16x16 layers of the committed UNet) change nothing in the
    UNet's output against the bench's layer-wise processor (diffusers' SDPA), and keep each query's attention
    over the 77 keys (rows summing to one)."""
    from bench.layers import cross_attention_layers
    from bench.prompts import LayerwiseState, install_layerwise
    from toytrain.base import install_grounding
    from toytrain.lora import GroundedLayerwiseProcessor

    unet = load_toy_pipeline().unet.float()
    layers = len(cross_attention_layers(unet))
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, generator=gen)
    state = LayerwiseState(embeddings=torch.randn(2, layers, 77, unet.config.cross_attention_dim, generator=gen))
    t = torch.tensor([500, 900])
    with torch.no_grad(), install_layerwise(unet, state):
        expected = unet(latents, t, encoder_hidden_states=state.embeddings[:, 0]).sample
        recorders = install_grounding(unet, lambda index: GroundedLayerwiseProcessor(index, state))
        got = unet(latents, t, encoder_hidden_states=state.embeddings[:, 0]).sample
    assert sorted({resolution for resolution, _ in recorders}) == [8, 16]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for resolution, recorder in recorders:
        assert recorder.probs.shape == (2, resolution * resolution, 77)
        torch.testing.assert_close(recorder.probs.sum(-1), torch.ones(2, resolution * resolution))
