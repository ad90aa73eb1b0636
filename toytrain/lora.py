"""Train one ED-LoRA per toy concept, the Mix-of-Show way, on single-concept views without layout.

Per concept: two new tokens with layer-wise embeddings (one row per cross-attention layer; the
first initialized at random with std 0.013, the second from the class word, as Mix-of-Show's
``<rand-0.013>+class`` initializer), plus rank-4 LoRAs on the text encoder's self-attention and on
every UNet attention projection (``unet_targets="cross-kvo"``: the cross-attention key, value and output
projections only). The base model stays frozen. The result is written in Mix-of-Show's
ED-LoRA layout (``params.new_concept_embedding / text_encoder / unet``), the format the bench loads.

With ``grounding_weight`` > 0 the concept tokens' cross-attention is also pulled into the object's box, the
same loss the base model was trained with (:func:`toytrain.base.grounding_loss`): the toy world's stand-in for
the localized attention that new tokens get in real SD models, which attention-guided composition relies on.
With ``grounding_trains="text"`` that loss moves only the token embeddings and the text encoder's LoRA; the UNet's
LoRA learns from the denoising loss alone.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file

from bench.layers import cross_attention_layers
from bench.prompts import (
    LayerwiseAttnProcessor,
    LayerwiseState,
    LayerwiseTextEncoder,
    install_layerwise,
    token_rows_written,
)
from toytrain import (
    GROUNDING_TRAINS,
    LORA_DIR,
    LORA_DISTRACTOR_SHARE,
    LORA_DISTRACTORS,
    LORA_GROUNDING_TRAINS,
    LORA_GROUNDING_WEIGHT,
    LORA_UNET_LR,
    LORA_UNET_TARGETS,
    LORA_VIEW_SIZES,
    UNET_TARGET_SETS,
)
from toytrain.base import GroundingProcessor, encode_latents, grounding_loss, install_grounding
from toytrain.common import ResumableLoop, TrainLog, checkpoint_dir, diffusion_target, lr_at, seed_everything
from toyworld.concepts import CONCEPTS, VIEW_SIZES, ToyConcept, sample_concept_view
from toyworld.models import WEIGHTS_DIR, load_toy_pipeline
from toyworld.world import render

RANK = 4
UNET_TARGETS = UNET_TARGET_SETS["all"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class GroundedLayerwiseProcessor(LayerwiseAttnProcessor):
    """A layer-wise cross-attention that keeps its head-averaged probabilities for the grounding loss."""

    def __init__(self, layer_index: int, state: LayerwiseState):
        super().__init__(layer_index, state)
        self._recorder = GroundingProcessor()
        self._recorder.record = True

    @property
    def probs(self) -> torch.Tensor | None:
        """``[B, HW, 77]`` attention probabilities of the last call."""
        return self._recorder.probs

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = self.state.embeddings
        assert embeddings is not None, "grounded layer-wise attention needs the layer-wise embeddings"
        return self._recorder(attn, hidden_states, embeddings[:, self.layer_index].to(hidden_states.dtype))


def _peft_deltas(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """peft's ``lora_A``/``lora_B`` weights renamed to ED-LoRA's ``lora_down``/``lora_up``."""
    state = get_peft_model_state_dict(model)
    return {
        prefix + key.replace(".lora_A.weight", ".lora_down.weight").replace(".lora_B.weight", ".lora_up.weight"):
        value.detach().contiguous()
        for key, value in state.items()
    }


def write_edlora(path: Path, tokens: dict[str, torch.Tensor], text_encoder: torch.nn.Module,
                 unet: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Write peft-adapted models' LoRAs and the token embeddings as a Mix-of-Show ED-LoRA safetensors file."""
    params = {
        "new_concept_embedding": tokens,
        "text_encoder": _peft_deltas(text_encoder, prefix="text_model."),  # as Mix-of-Show writes them
        "unet": _peft_deltas(unet),
    }
    flat = {f"params.{section}.{key}": value.contiguous() for section, tensors in params.items()
            for key, value in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(flat, str(tmp), metadata={"format": "edlora", "rank": str(RANK), **(metadata or {})})
    tmp.replace(path)


def base_digest(*modules: torch.nn.Module) -> str:
    """A short hash of the base modules' weights (tensors, not the files, whose config metadata is not
    byte-stable): a LoRA's checkpoint resumes on the same base only."""
    digest = hashlib.sha256()
    for module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def train_concept(concept: ToyConcept, out: Path, *, seed: int, log: TrainLog, weights: Path | None,
                  views: int = 400, steps: int = 800, batch: int = 32, checkpoints: Path | None = None,
                  save_every: int = 100, grounding_weight: float = LORA_GROUNDING_WEIGHT,
                  grounding_trains: str = LORA_GROUNDING_TRAINS,
                  distractor_share: float = LORA_DISTRACTOR_SHARE, distractors: str = LORA_DISTRACTORS,
                  unet_targets: str = LORA_UNET_TARGETS, unet_lr: float = LORA_UNET_LR,
                  view_sizes: str = LORA_VIEW_SIZES) -> Path:
    """Train one concept's ED-LoRA and write ``<out>/<id>.safetensors``.

    ``distractor_share``: the share of views that also hold other objects, named in the caption, and
    ``distractors`` which ones (:func:`toyworld.concepts.sample_concept_view`). ``grounding_trains``: what the
    grounding loss moves, one of :data:`toytrain.GROUNDING_TRAINS` (``"text"``: the token embeddings and the text
    encoder's LoRA only). ``unet_targets``: which UNet projections get a LoRA, a key of
    :data:`toytrain.UNET_TARGET_SETS`. ``unet_lr``: the UNet LoRA's peak learning rate (the text encoder's LoRA
    keeps 1e-3, the token embeddings 5e-3). ``view_sizes``: the radius range of the views that show the concept
    alone, a key of :data:`toyworld.concepts.VIEW_SIZES`.

    Resumable (:class:`toytrain.common.ResumableLoop`): token embeddings, LoRA weights, optimizer and random
    generator are saved to ``checkpoints`` every ``save_every`` steps.
    """
    if grounding_trains not in GROUNDING_TRAINS:
        raise ValueError(f"grounding_trains: expected one of {GROUNDING_TRAINS}, got {grounding_trains!r}")
    if unet_targets not in UNET_TARGET_SETS:
        raise ValueError(f"unet_targets: expected one of {tuple(UNET_TARGET_SETS)}, got {unet_targets!r}")
    if view_sizes not in VIEW_SIZES:
        raise ValueError(f"view_sizes: expected one of {tuple(VIEW_SIZES)}, got {view_sizes!r}")
    if not unet_lr > 0:
        raise ValueError(f"unet_lr: expected a learning rate above 0, got {unet_lr!r}")
    seed_everything(seed)
    start = time.time()
    pipe = load_toy_pipeline(weights)
    unet, text_encoder, vae = pipe.unet, pipe.text_encoder, pipe.vae
    for module in (unet, text_encoder, vae):
        module.requires_grad_(False)
    rng = np.random.default_rng(seed)
    samples = [sample_concept_view(rng, concept, distractor_share, distractors, view_sizes) for _ in range(views)]
    pixels = torch.from_numpy(np.stack([np.asarray(render(objects, bg)) for objects, bg, _ in samples]))
    boxes = torch.tensor([objects[0].box for objects, _, _ in samples], dtype=torch.float32)
    means, stds = encode_latents(vae, pixels.permute(0, 3, 1, 2).contiguous())
    layers = len(cross_attention_layers(unet))
    encoder = LayerwiseTextEncoder.from_pipeline(pipe)
    tokenizer = encoder.tokenizer_for(list(concept.tokens))
    captions = [caption for _, _, caption in samples]
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    token_ids = [tokenizer.convert_tokens_to_ids(t) for t in concept.tokens]
    positions = [int((ids[0] == t).nonzero()[0]) for t in token_ids]
    ids = torch.where(torch.isin(ids, torch.tensor(token_ids)), torch.zeros_like(ids), ids)

    class_ids = pipe.tokenizer(concept.class_name, add_special_tokens=False).input_ids
    table = text_encoder.get_input_embeddings().weight
    first = torch.randn(layers, table.shape[1]) * 0.013
    second = table[class_ids].mean(0).expand(layers, -1).clone()
    embeddings = torch.nn.Parameter(torch.stack([first, second], dim=1))  # [layers, 2, D]

    base = base_digest(unet, text_encoder)
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=UNET_TARGET_SETS[unet_targets]), unet)
    inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TEXT_TARGETS), text_encoder)
    unet_lora = [p for n, p in unet.named_parameters() if "lora_" in n]
    text_lora = [p for n, p in text_encoder.named_parameters() if "lora_" in n]
    peaks = [5e-3, unet_lr, 1e-3]
    opt = torch.optim.AdamW([{"params": params, "lr": peak}
                             for params, peak in zip(([embeddings], unet_lora, text_lora), peaks, strict=True)],
                            weight_decay=0.0)
    noise_schedule = pipe.scheduler
    alphas = noise_schedule.alphas_cumprod
    state = LayerwiseState()
    gen = torch.Generator().manual_seed(seed)
    trainable = {"embeddings": embeddings, **{f"unet.{n}": p for n, p in unet.named_parameters() if "lora_" in n},
                 **{f"text_encoder.{n}": p for n, p in text_encoder.named_parameters() if "lora_" in n}}
    recipe = f"-grounding{grounding_weight:g}" if grounding_weight else ""
    recipe += "-text" if grounding_weight and grounding_trains == "text" else ""
    recipe += f"-distractors{distractor_share:g}" if distractor_share else ""
    recipe += f"-{distractors}" if distractor_share and distractors != "differ" else ""
    recipe += f"-unet-{unet_targets}" if unet_targets != "all" else ""
    recipe += f"-unet-lr{unet_lr:g}" if unet_lr != LORA_UNET_LR else ""
    recipe += f"-views-{view_sizes}" if view_sizes != "alone" else ""
    folder = checkpoints or checkpoint_dir(f"lora-{concept.id}-{steps}-seed{seed}-base{base}{recipe}")
    loop = ResumableLoop(f"lora-{concept.id}", folder, log, gen, parts={"optimizer": opt}, tensors=trainable,
                         every=save_every, started=start)
    first = loop.resume()
    running = float(loop.extra.get("running", 0.0))
    running_grounding = float(loop.extra.get("running_grounding", 0.0))
    unet.train()
    text_encoder.train()
    token_positions = torch.tensor(positions)
    with install_layerwise(unet, state):
        recorders = []
        if grounding_weight:
            recorders = install_grounding(unet, lambda index: GroundedLayerwiseProcessor(index, state))
        for step in range(first, steps):
            for group, peak in zip(opt.param_groups, peaks, strict=True):
                group["lr"] = lr_at(step, steps, peak, warmup=50)
            idx = torch.randint(views, (batch,), generator=gen)
            latents = means[idx].float() + stds[idx].float() * torch.randn(batch, 4, 16, 16, generator=gen)
            rows = embeddings[:, None].expand(layers, batch, 2, -1).reshape(layers * batch, 2, -1)
            with token_rows_written(text_encoder.get_input_embeddings(), positions, rows):
                hidden = text_encoder(ids[idx].repeat(layers, 1))[0]
            state.embeddings = hidden.view(layers, batch, 77, -1).transpose(0, 1)
            noise = torch.randn(latents.shape, generator=gen)
            t = torch.randint(0, len(alphas), (batch,), generator=gen)
            pred = unet(noise_schedule.add_noise(latents, noise, t), t, encoder_hidden_states=hidden[:batch]).sample
            loss = F.mse_loss(pred, diffusion_target(noise_schedule, latents, noise, t))
            opt.zero_grad(set_to_none=True)
            if recorders:
                every_image = torch.ones(batch, dtype=torch.bool)
                grounding = grounding_loss(recorders, token_positions.expand(batch, -1),
                                           boxes[idx, None].expand(-1, len(positions), -1), every_image)
                running_grounding += grounding.item()
                if grounding_trains == "text":
                    loss.backward(retain_graph=True)
                    (grounding_weight * grounding).backward(inputs=[embeddings, *text_lora])
                else:
                    (loss + grounding_weight * grounding).backward()
                loss = loss + grounding_weight * grounding
            else:
                loss.backward()
            opt.step()
            running += loss.item()
            if (step + 1) % 100 == 0:
                grounded_loss = {"grounding": round(running_grounding / 100, 4)} if recorders else {}
                log.event(f"lora-{concept.id}", step=step + 1, loss=round(running / 100, 5), **grounded_loss,
                          seconds=round(loop.seconds(), 1))
                running = running_grounding = 0.0
            loop.after_step(step + 1, steps, running=running, running_grounding=running_grounding)
    tokens = {token: embeddings[:, i].detach().clone() for i, token in enumerate(concept.tokens)}
    path = out / f"{concept.id}.safetensors"
    write_edlora(path, tokens, text_encoder, unet, {"concept": concept.id})
    loop.finish()
    trains = {"grounding_trains": grounding_trains} if grounding_weight else {}
    kind = {"distractors": distractors} if distractor_share else {}
    targets = {"unet_targets": unet_targets} if unet_targets != "all" else {}
    log.event(f"lora-{concept.id}-done", steps=steps, grounding_weight=grounding_weight, **trains,
              distractor_share=distractor_share, **kind, **targets, unet_lr=unet_lr, view_sizes=view_sizes,
              seconds=round(loop.seconds(), 1))
    return path


def train_loras(out_dir: Path, *, seed: int, log: TrainLog, scale: float = 1.0,
                concepts: list[str] | None = None, lora_dir: Path | None = None,
                grounding_weight: float = LORA_GROUNDING_WEIGHT, grounding_trains: str = LORA_GROUNDING_TRAINS,
                distractor_share: float = LORA_DISTRACTOR_SHARE, distractors: str = LORA_DISTRACTORS,
                unet_targets: str = LORA_UNET_TARGETS, unet_lr: float = LORA_UNET_LR,
                view_sizes: str = LORA_VIEW_SIZES) -> None:
    """Train every (or the named) concept's ED-LoRA; LoRAs go to the toy dataset's ``loras`` folder."""
    target = lora_dir or (LORA_DIR if out_dir.resolve() == WEIGHTS_DIR.resolve() else out_dir / "loras")
    for concept_id in concepts or list(CONCEPTS):
        if concept_id not in CONCEPTS:
            raise SystemExit(f"--concepts: unknown concept '{concept_id}'; expected one of {list(CONCEPTS)}")
        # the concept's place in the world, not in the request: a subset trains what the full run trains
        number = list(CONCEPTS).index(concept_id)
        train_concept(CONCEPTS[concept_id], target, seed=seed + number, log=log, weights=out_dir,
                      steps=max(4, int(800 * scale)), grounding_weight=grounding_weight,
                      grounding_trains=grounding_trains, distractor_share=distractor_share,
                      distractors=distractors, unet_targets=unet_targets, unet_lr=unet_lr,
                      view_sizes=view_sizes)
