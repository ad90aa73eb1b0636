"""Train the toy UNet and text encoder from scratch, with a token-grounding loss from the first step.

Diffusion loss: v-prediction on SD1.x's betas rescaled to zero terminal SNR (the default, ``zero-snr-v``), or
epsilon prediction on SD1.x's own schedule (``sd1-epsilon``; :data:`toyworld.models.SCHEDULES`); low-noise steps
capped at SNR 5 (:func:`toytrain.common.loss_weights`); 10 % captions dropped to the empty prompt. A
word-identity loss on the text encoder's outputs (:class:`WordHead`, weight ``word_weight``, 0 for none).
Grounding loss (TokenCompose-style): for every caption word that names an object (its colour, texture and
shape), ``(1 - attention mass inside the object's box)**2`` at every cross-attention layer of 8x8 or finer.
Without it cross-attention does not localize in this world, and box-guided methods would have nothing to act on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from torch import nn

from bench.layers import attention_level, cross_attention_layers
from bench.tokenizer import build_clip_tokenizer
from toytrain import BASE_GROUNDING_LAYERS, GROUNDING_LAYERS
from toytrain.common import (
    ResumableLoop,
    TrainLog,
    checkpoint_dir,
    diffusion_target,
    loss_weights,
    lr_at,
    seed_everything,
)
from toytrain.data import render_set, to_unit
from toyworld.models import (
    SCHEDULES,
    build_text_encoder,
    build_unet,
    load_vae,
    load_weights,
    save_weights,
    scheduler,
    stored_unet_config,
    unet_metadata,
    weights_path,
)
from toyworld.world import COLOURS, MAX_OBJECTS, SHAPES, SIZE, TEXTURES, UPRIGHT, ToyImage

MAX_WORDS = 12  # four objects of up to three words
GROUNDING_WEIGHT = 0.05
WORD_TEMPERATURE = 10.0
CAPTION_DROPOUT = 0.1
MIN_SNR = 5.0


class GroundingProcessor:
    """Cross-attention with explicit probabilities, kept (head-averaged) for the grounding loss."""

    def __init__(self) -> None:
        self.probs: torch.Tensor | None = None
        self.record = False

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        batch = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, None)
        if self.record:
            self.probs = probs.view(batch, attn.heads, *probs.shape[1:]).mean(1)  # [B, HW, 77]
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out))


def word_token_positions(tokenizer, words: list[str]) -> list[list[int]]:
    """Token positions (SOT = 0) of each caption word, tokenized word by word as CLIP's BPE does."""
    positions, cursor = [], 1
    for word in words:
        count = len(tokenizer(word, add_special_tokens=False).input_ids)
        positions.append(list(range(cursor, cursor + count)))
        cursor += count
    return positions


def grounding_targets(tokenizer, items: list[ToyImage]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the token position of each object-naming word (-1 = none) and its object's box."""
    positions = torch.full((len(items), MAX_WORDS), -1, dtype=torch.long)
    boxes = torch.zeros(len(items), MAX_WORDS, 4)
    for i, item in enumerate(items):
        words = item.caption.split(" ")
        word_positions = word_token_positions(tokenizer, words)
        slot = 0
        for word_index, obj_index in item.word_objects.items():
            position = word_positions[word_index][0]
            if position < 76 and slot < MAX_WORDS:
                positions[i, slot] = position
                boxes[i, slot] = torch.tensor(item.objects[obj_index].box)
                slot += 1
    return positions, boxes


def box_masks(boxes: torch.Tensor, resolution: int) -> torch.Tensor:
    """``[..., resolution**2]`` masks of the cells each pixel box overlaps."""
    cell = SIZE / resolution
    edges = torch.arange(resolution, dtype=torch.float32) * cell
    x0, y0, x1, y1 = boxes.unbind(-1)
    cols = (edges + cell > x0[..., None]) & (edges < x1[..., None])
    rows = (edges + cell > y0[..., None]) & (edges < y1[..., None])
    return (rows[..., :, None] & cols[..., None, :]).flatten(-2).float()


def grounding_loss(layers: Iterable[tuple[int, GroundingProcessor]], positions: torch.Tensor, boxes: torch.Tensor,
                   keep: torch.Tensor) -> torch.Tensor:
    """Mean over recorded ``(resolution, processor)`` layers and object words of ``(1 - in-box attention mass)**2``."""
    valid = (positions >= 0) & keep[:, None]
    if not valid.any():
        return torch.zeros(())
    losses = [((1 - in_box_mass(processor.probs, positions, boxes, resolution)) ** 2)[valid].mean()
              for resolution, processor in layers]
    return torch.stack(losses).mean()


def in_box_mass(probs: torch.Tensor, positions: torch.Tensor, boxes: torch.Tensor, resolution: int) -> torch.Tensor:
    """``[B, W]``: the share of each object word's attention map (``probs[b, :, positions[b, w]]``, over the
    ``resolution``-square grid) that falls on the cells of its object's box."""
    gather = positions.clamp(min=0)
    maps = torch.gather(probs, 2, gather[:, None, :].expand(-1, probs.shape[1], -1))  # [B, HW, W]
    maps = maps / maps.sum(1, keepdim=True).clamp_min(1e-8)
    return (maps * box_masks(boxes, resolution).transpose(1, 2)).sum(1)


class WordHead(nn.Module):
    """Reads which world word (colour, texture or shape) a caption token names from the text encoder's output.

    Trained beside the generator (:func:`word_loss`) and thrown away after. Without it the jointly trained encoder
    gives a shape word nearly the output of any other shape after the same colour
    (``scripts/diagnose_text_encoder.py``: cosine 0.996 between "square" and "cross" in a world trained without it,
    0.311 with it). The logits are cosines times a fixed temperature, so the loss is met only by outputs that point
    apart, not by a larger head.
    """

    def __init__(self, tokenizer, width: int) -> None:
        super().__init__()
        words = (*COLOURS, *TEXTURES[1:], *SHAPES)
        token_ids = [tokenizer(word, add_special_tokens=False).input_ids for word in words]
        if any(len(ids) != 1 for ids in token_ids) or len({ids[0] for ids in token_ids}) != len(words):
            found = dict(zip(words, token_ids, strict=True))
            raise ValueError(f"every world word must be one distinct CLIP token; got {found}")
        self.register_buffer("token_ids", torch.tensor([ids[0] for ids in token_ids]), persistent=False)
        self.classes = nn.Parameter(torch.randn(len(words), width))

    def forward(self, hidden: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, MAX_WORDS, words]`` at each object word's position, and its class (-1 where none)."""
        gather = positions.clamp(min=0)
        outputs = torch.gather(hidden, 1, gather[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = WORD_TEMPERATURE * F.normalize(outputs, dim=-1) @ F.normalize(self.classes, dim=-1).T
        matches = torch.gather(ids, 1, gather)[..., None] == self.token_ids
        labels = torch.where(matches.any(-1) & (positions >= 0), matches.float().argmax(-1), -1)
        return logits, labels


def word_loss(head: WordHead, hidden: torch.Tensor, ids: torch.Tensor, positions: torch.Tensor,
              keep: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of :class:`WordHead` over the object words of the captions kept (not dropped)."""
    logits, labels = head(hidden, ids, positions)
    labels = torch.where(keep[:, None], labels, -1)
    if not (labels >= 0).any():
        return torch.zeros(())
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-1)


def install_grounding(unet, make: Callable[[int], Any] = lambda layer_index: GroundingProcessor()
                      ) -> list[tuple[int, Any]]:
    """A recording processor (``make(layer_index)``, a :class:`GroundingProcessor` by default) on every
    cross-attention layer of 8x8 or finer; returns (resolution, processor).

    :func:`grounding_layers` chooses which of them the grounding loss reads.
    """
    latent = unet.config.sample_size
    installed = []
    processors = dict(unet.attn_processors)
    for index, name in enumerate(cross_attention_layers(unet)):
        resolution = latent // attention_level(unet, name)
        if resolution >= 8:
            processor = make(index)
            processors[f"{name}.processor"] = processor
            installed.append((resolution, processor))
    unet.set_attn_processor(processors)
    return installed


def grounding_layers(installed: list[tuple[int, Any]], which: str) -> list[tuple[int, Any]]:
    """The installed layers the grounding loss reads: ``"last"``, the last of each resolution (the committed world's:
    one 16x16 and one 8x8 layer), or ``"all"`` of them."""
    if which == "all":
        return list(installed)
    if which == "last":
        return list(dict(installed).items())
    raise ValueError(f"grounding_layers: expected one of {GROUNDING_LAYERS}, got {which!r}")


def encode_latents(vae, pixels: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, scaled by the VAE's scaling factor (fp16)."""
    means, stds = [], []
    scale = vae.config.scaling_factor
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            dist = vae.encode(to_unit(pixels[i : i + batch])).latent_dist
            means.append((dist.mean * scale).half())
            stds.append((dist.std * scale).half())
    return torch.cat(means), torch.cat(stds)


def _data_suffix(shape_only_share: float, max_objects: int) -> str:
    """What sets a training set apart from the committed world's first one, for file and folder names."""
    return (f"-shapes{shape_only_share:g}" if shape_only_share else "") + (
        f"-objects{max_objects}" if max_objects != MAX_OBJECTS else "")


def _grounding_suffix(grounded_layers: str) -> str:
    """What sets a run's grounded layers apart from the committed world's, for folder names."""
    return "" if grounded_layers == BASE_GROUNDING_LAYERS else f"-grounding-{grounded_layers}"


def encode_training_set(vae, tokenizer, images: int, seed: int, shape_only_share: float = 0.0,
                        max_objects: int = MAX_OBJECTS) -> dict[str, torch.Tensor]:
    """``images`` base-training images of ``seed`` (upright objects) as the base stage reads them: VAE latents
    (``means``, ``stds``), caption token ids (``ids``) and grounding targets (``positions``, ``boxes``)."""
    pixels, items = render_set(images, seed=seed, poses=UPRIGHT, shape_only_share=shape_only_share,
                               max_objects=max_objects)
    means, stds = encode_latents(vae, pixels)
    ids = tokenizer([item.caption for item in items], padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    positions, boxes = grounding_targets(tokenizer, items)
    data = {"means": means, "stds": stds, "ids": ids, "positions": positions, "boxes": boxes}
    return {key: value.contiguous() for key, value in data.items()}


def _training_data(folder: Path, weights: Path, images: int, seed: int, tokenizer, shape_only_share: float = 0.0,
                   max_objects: int = MAX_OBJECTS) -> dict[str, torch.Tensor]:
    """Latents, token ids and grounding targets of the training set, cached in the checkpoint folder."""
    path = folder / f"data-{images}-{seed}{_data_suffix(shape_only_share, max_objects)}.safetensors"
    if path.is_file():
        return load_file(str(path))
    data = encode_training_set(load_vae(weights).eval(), tokenizer, images, seed, shape_only_share, max_objects)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(data, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)
    return data


def train_base(out_dir: Path, *, seed: int = 0, log: TrainLog, scale: float = 1.0, images: int = 50000,
               steps: int = 3800, batch: int = 64, peak_lr: float = 1e-3, ema_decay: float = 0.999,
               schedule: str = "zero-snr-v", word_weight: float = 0.1, unet_size: str = "small",
               checkpoints: Path | None = None, save_every: int = 100,
               init_from: Path | None = None, shape_only_share: float = 0.0,
               max_objects: int = MAX_OBJECTS, grounded_layers: str = BASE_GROUNDING_LAYERS) -> None:
    """Train and write ``unet.safetensors`` and ``text_encoder.safetensors`` (their EMA weights).

    ``init_from`` warm-starts the UNet and text encoder from a trained world's weights folder (the UNet's
    size is read from its file) and trains ``steps`` more steps on the same data with a fresh optimizer;
    the EMA copies start from the loaded weights. A ``shape_only_share`` of the training captions name their
    objects by shape alone, and its images hold 1 to ``max_objects`` objects (:func:`toyworld.world.sample_image`).
    ``grounded_layers``: the cross-attention layers the grounding loss reads (:func:`grounding_layers`).

    Resumable: the state is saved to ``checkpoints`` every ``save_every`` steps, and a run started again
    with the same arguments continues from there. EMA snapshots go to ``checkpoints/snapshot`` every
    500 steps, so the gates can be measured while training goes on; the last raw (non-EMA) weights go
    to ``checkpoints/raw``.
    """
    if grounded_layers not in GROUNDING_LAYERS:
        raise ValueError(f"grounded_layers: expected one of {GROUNDING_LAYERS}, got {grounded_layers!r}")
    seed_everything(seed)
    steps, images = max(4, int(steps * scale)), max(128, int(images * scale))
    start_name = f"-from-{init_from.resolve().name}-lr{peak_lr:g}" if init_from else ""
    folder = checkpoints or checkpoint_dir(f"base-{steps}-{unet_size}-{schedule}-words{word_weight:g}{start_name}"
                                           f"{_data_suffix(shape_only_share, max_objects)}"
                                           f"{_grounding_suffix(grounded_layers)}")
    start = time.time()
    tokenizer = build_clip_tokenizer()
    unet, text_encoder = build_unet(unet_size), build_text_encoder()
    if init_from is not None:
        warm_start(unet, text_encoder, init_from, unet_size)
    unet.train()
    text_encoder.train()
    data = _training_data(folder, out_dir, images, seed + 1, tokenizer, shape_only_share, max_objects)
    means, stds, ids, positions, boxes = (data[k] for k in ("means", "stds", "ids", "positions", "boxes"))
    empty = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    layers = grounding_layers(install_grounding(unet), grounded_layers)
    head = WordHead(tokenizer, text_encoder.config.hidden_size) if word_weight else None
    params = [*unet.parameters(), *text_encoder.parameters(), *(head.parameters() if head else ())]
    opt = torch.optim.AdamW(params, lr=peak_lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema_unet = EMAModel(unet.parameters(), decay=ema_decay)
    ema_text = EMAModel(text_encoder.parameters(), decay=ema_decay)
    gen = torch.Generator().manual_seed(seed)
    parts = {"unet": unet, "text_encoder": text_encoder, "optimizer": opt, "ema_unet": ema_unet,
             "ema_text": ema_text} | ({"word_head": head} if head else {})
    loop = ResumableLoop("base", folder, log, gen, parts=parts, every=save_every, started=start)
    first = loop.resume()
    if first == 0:
        log.event("base-data", images=images, seconds=round(loop.seconds(), 1))
    trained_on = SCHEDULES[schedule]
    noise_schedule = scheduler(trained_on)
    running = {"diffusion": 0.0, "grounding": 0.0, "words": 0.0}
    for step in range(first, steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, peak_lr, warmup=200)
        idx = torch.randint(len(means), (batch,), generator=gen)
        latents = means[idx].float() + stds[idx].float() * torch.randn(batch, 4, 16, 16, generator=gen)
        keep = torch.rand(batch, generator=gen) >= CAPTION_DROPOUT
        batch_ids = torch.where(keep[:, None], ids[idx], empty[None])
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (batch,), generator=gen)
        noisy = noise_schedule.add_noise(latents, noise, t)
        for _, processor in layers:
            processor.record = True
        hidden = text_encoder(batch_ids)[0]
        pred = unet(noisy, t, encoder_hidden_states=hidden).sample
        target = diffusion_target(noise_schedule, latents, noise, t)
        weight = loss_weights(noise_schedule, t, MIN_SNR)
        diffusion = (weight * F.mse_loss(pred, target, reduction="none").mean((1, 2, 3))).mean()
        grounding = grounding_loss(layers, positions[idx], boxes[idx], keep)
        words = word_loss(head, hidden, batch_ids, positions[idx], keep) if head else torch.zeros(())
        loss = diffusion + GROUNDING_WEIGHT * grounding + word_weight * words
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_unet.step(unet.parameters())
        ema_text.step(text_encoder.parameters())
        running["diffusion"] += diffusion.item()
        running["grounding"] += grounding.item()
        running["words"] += words.item()
        done = step + 1
        if done % 100 == 0 or done == steps:
            count = 100 if done % 100 == 0 else done % 100
            log.event("base", step=done, diffusion=round(running["diffusion"] / count, 5),
                      grounding=round(running["grounding"] / count, 4), words=round(running["words"] / count, 4),
                      seconds=round(loop.seconds(), 1))
            running = dict.fromkeys(running, 0.0)
        if done % 500 == 0 or done == steps:
            _write_ema(unet, text_encoder, ema_unet, ema_text, folder / "snapshot" if done < steps else out_dir,
                       trained_on)
        if done == steps:  # the last raw weights too, to compare with the EMA (toytrain.gates --weights)
            save_weights(unet, weights_path("unet", folder / "raw"), unet_metadata(unet, trained_on))
            save_weights(text_encoder, weights_path("text_encoder", folder / "raw"))
        loop.after_step(done, steps)
    loop.finish()
    log.event("base-done", steps=steps, samples=steps * batch, ema_decay=ema_decay, schedule=schedule,
              word_weight=word_weight, unet=unet_size, seconds=round(loop.seconds(), 1),
              **({"warm_start": str(init_from), "peak_lr": peak_lr} if init_from else {}),
              **({"shape_only_share": shape_only_share} if shape_only_share else {}),
              **({"max_objects": max_objects} if max_objects != MAX_OBJECTS else {}),
              **({"grounding_layers": grounded_layers} if grounded_layers != BASE_GROUNDING_LAYERS else {}))


def warm_start(unet: nn.Module, text_encoder: nn.Module, folder: Path, unet_size: str) -> None:
    """Load a trained world's UNet and text encoder into the fresh modules; the UNet must be ``unet_size``."""
    path = weights_path("unet", folder)
    wanted = json.loads(json.dumps(dict(unet.config)))
    stored = stored_unet_config(path)
    if any(stored.get(key) != value for key, value in wanted.items() if not key.startswith("_")):
        raise SystemExit(f"--init-from {folder}: '{path}' is not a '{unet_size}' UNet; pass the --unet it was "
                         "trained with")
    load_weights(unet, path, "python -m toytrain base")
    load_weights(text_encoder, weights_path("text_encoder", folder), "python -m toytrain base")


def _write_ema(unet, text_encoder, ema_unet: EMAModel, ema_text: EMAModel, folder: Path, schedule: dict) -> None:
    """Write the EMA weights as ``unet`` / ``text_encoder`` safetensors in ``folder`` (training weights kept)."""
    configs = {"unet": unet_metadata(unet, schedule), "text_encoder": None}
    for module, ema, name in ((unet, ema_unet, "unet"), (text_encoder, ema_text, "text_encoder")):
        ema.store(module.parameters())
        ema.copy_to(module.parameters())
        save_weights(module, weights_path(name, folder), configs[name])
        ema.restore(module.parameters())
