"""Train the per-box classifier on box crops of rendered scenes, two thirds of them VAE round-trips.

Half of the round trips decode a perturbed latent (:func:`round_trip` with ``latent_noise``): generated images
are never exact decodes of a render, and a judge trained on clean renders and clean round trips alone read the
striped circles that LoRA-Composer draws as crosses or squares when the box moved by two pixels.

Positives: each object's box, jittered in scale and position, labelled with its shape, colour and
texture; a third of them (:data:`WIDE_SHARE`) are 1.5-2.2x the object's box with the object anywhere inside, as
a layout box is usually larger than what a method draws in it (trained on nearly centred crops alone, the judge
read a quarter of such objects as empty or as another shape). Negatives (``none``): random squares that cover at
most 15 % of any object's box, and squares of noise images (:data:`TRAINED_NOISE`): noise holds no object, and
a judge that reads shapes in it credits a method whose boxes are garbage. Per-pixel uniform RGB noise is held
out of training and measured instead (``uniform_noise_read_as_none`` in the training log), so that the judge's
rejection of noise is shown to generalize, not learnt from the kind of noise the calibration's ``ref-noise``
uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from toytrain.common import ResumableLoop, TrainLog, checkpoint_dir, lr_at, seed_everything
from toytrain.data import render_set, to_unit
from toyworld.classifier import COLOUR_LABELS, NONE, SHAPE_LABELS, TEXTURE_LABELS, BoxClassifier, crop_tensor
from toyworld.models import load_vae, save_weights, weights_path
from toyworld.world import SIZE, ToyImage

IGNORE = -100
LATENT_NOISE = 0.6  # at most this share of a latent's std is added before decoding (a third of the images)
CHANNEL_JITTER = 0.05  # per-channel gain std
# Object crops: nearly centred ones are 0.8 to CENTRED_MAX_SCALE times the object's box; a WIDE_SHARE of them are
# CENTRED_MAX_SCALE to WIDE_MAX_SCALE times it, with the object anywhere inside.
CENTRED_MAX_SCALE = 1.5
WIDE_SHARE = 1 / 3
WIDE_MAX_SCALE = 2.2


def round_trip(vae, pixels: torch.Tensor, batch: int = 256, latent_noise: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Images encoded and decoded by the toy VAE (posterior mode), as uint8.

    With ``latent_noise`` > 0, each latent gets Gaussian noise of a random share (up to ``latent_noise``) of
    that latent's own standard deviation before decoding.
    """
    out = []
    with torch.no_grad():
        for i in range(0, len(pixels), batch):
            latents = vae.encode(to_unit(pixels[i : i + batch])).latent_dist.mode()
            if latent_noise:
                share = latent_noise * torch.rand(len(latents), 1, 1, 1, generator=generator)
                spread = latents.std(dim=(1, 2, 3), keepdim=True)
                latents = latents + share * spread * torch.randn(latents.shape, generator=generator)
            decoded = vae.decode(latents).sample
            out.append(((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(out)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h


def _samples(image: Image.Image, item: ToyImage, rng: np.random.Generator) -> list[tuple[torch.Tensor, tuple]]:
    """(crop, (shape, colour, texture) label indices) for each object, plus one empty crop if one fits."""
    out = []
    for obj in item.objects:
        if rng.random() < WIDE_SHARE:  # a layout box larger than the object, which lies anywhere inside it
            side = 2 * obj.radius * rng.uniform(CENTRED_MAX_SCALE, WIDE_MAX_SCALE)
            slack = (side - 2 * obj.radius) / 2
        else:
            side = 2 * obj.radius * rng.uniform(0.8, CENTRED_MAX_SCALE)
            slack = 0.15 * side
        cx = obj.cx + rng.uniform(-slack, slack)
        cy = obj.cy + rng.uniform(-slack, slack)
        box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        labels = (SHAPE_LABELS.index(obj.shape), COLOUR_LABELS.index(obj.colour), TEXTURE_LABELS.index(obj.texture))
        out.append((crop_tensor(image, box), labels))
    for _ in range(10):
        side = rng.uniform(12, 40)
        x, y = rng.uniform(0, SIZE - side, size=2)
        box = (x, y, x + side, y + side)
        if all(_overlap(box, o.box) <= 0.15 * (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) for o in item.objects):
            out.append((crop_tensor(image, box), (SHAPE_LABELS.index(NONE), IGNORE, IGNORE)))
            break
    return out


def _gaussian(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(rng.uniform(0, 255, 3), rng.uniform(10, 80), (SIZE, SIZE, 3))


def _blocks(rng: np.random.Generator) -> np.ndarray:
    cell = int(rng.choice([2, 4, 8]))
    return np.kron(rng.uniform(0, 255, (SIZE // cell, SIZE // cell, 3)), np.ones((cell, cell, 1)))


def _two_colours(rng: np.random.Generator) -> np.ndarray:
    a, b = rng.uniform(0, 255, (2, 3))
    return np.where(rng.random((SIZE, SIZE, 1)) < rng.uniform(0.2, 0.8), a, b)


def _uniform(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 256, (SIZE, SIZE, 3))


NoiseMaker = Callable[[np.random.Generator], np.ndarray]  # a random 64x64x3 noise image, values in [0, 255]
TRAINED_NOISE: dict[str, NoiseMaker] = {"gaussian": _gaussian, "blocks": _blocks, "two-colour": _two_colours}
HELD_OUT_NOISE: dict[str, NoiseMaker] = {"uniform": _uniform}


def noise_crops(count: int, kinds: Mapping[str, NoiseMaker], rng: np.random.Generator) -> torch.Tensor:
    """``count`` random square crops (12-40 px) of noise images of the given kinds, as classifier inputs."""
    makers, crops = list(kinds.values()), []
    for i in range(count):
        make = makers[i % len(makers)]
        image = Image.fromarray(np.clip(make(rng), 0, 255).astype(np.uint8))
        side = rng.uniform(12, 40)
        x, y = rng.uniform(0, SIZE - side, size=2)
        crops.append(crop_tensor(image, (x, y, x + side, y + side)))
    return torch.stack(crops)


def _dataset(pixels: torch.Tensor, items: list[ToyImage], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for i, item in enumerate(items):
        image = Image.fromarray(pixels[i].permute(1, 2, 0).numpy())
        for crop, label in _samples(image, item, rng):
            crops.append(crop)
            labels.append(label)
    noise = noise_crops(len(items) // 4, TRAINED_NOISE, rng)
    labels.extend([(SHAPE_LABELS.index(NONE), IGNORE, IGNORE)] * len(noise))
    return torch.cat([torch.stack(crops), noise]), torch.tensor(labels)


def _augment(crops: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter (partly per channel), noise and, for a third of the batch, a slight blur."""
    n = len(crops)
    gain = 1 + 0.1 * torch.randn(n, 1, 1, 1, generator=gen) + CHANNEL_JITTER * torch.randn(n, 3, 1, 1, generator=gen)
    shift = 0.05 * torch.randn(n, 1, 1, 1, generator=gen)
    out = crops * gain + shift + 0.03 * torch.randn(crops.shape, generator=gen)
    blur = torch.rand(n, generator=gen) < 0.33
    if blur.any():
        out[blur] = F.avg_pool2d(F.pad(out[blur], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return out.clamp(-1, 1)


def _loss(model: BoxClassifier, crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    shape, colour, texture = model(crops)
    return (F.cross_entropy(shape, labels[:, 0]) + F.cross_entropy(colour, labels[:, 1], ignore_index=IGNORE)
            + F.cross_entropy(texture, labels[:, 2], ignore_index=IGNORE))


@torch.no_grad()
def accuracy(model: BoxClassifier, crops: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per-head accuracy (colour and texture over object crops only)."""
    shape, colour, texture = model(crops)
    objects = labels[:, 1] != IGNORE
    return {
        "shape": float((shape.argmax(1) == labels[:, 0]).float().mean()),
        "colour": float((colour.argmax(1) == labels[:, 1])[objects].float().mean()),
        "texture": float((texture.argmax(1) == labels[:, 2])[objects].float().mean()),
    }


@torch.no_grad()
def none_rate(model: BoxClassifier, crops: torch.Tensor) -> float:
    """The share of ``crops`` the classifier reads as holding no object."""
    return float((model(crops)[0].argmax(1) == SHAPE_LABELS.index(NONE)).float().mean())


def _round_tripped_set(vae, count: int, seed: int) -> tuple[torch.Tensor, list[ToyImage]]:
    """Renders: a third as drawn, a third VAE round trips, a third round trips of perturbed latents."""
    pixels, items = render_set(count, seed=seed)
    third = count // 3
    pixels[:third] = round_trip(vae, pixels[:third])
    perturbed = slice(third, 2 * third)
    pixels[perturbed] = round_trip(vae, pixels[perturbed], latent_noise=LATENT_NOISE,
                                   generator=torch.Generator().manual_seed(seed))
    return pixels, items


def train_classifier(out_dir: Path, *, seed: int = 0, log: TrainLog, scale: float = 1.0, images: int = 24000,
                     epochs: int = 8, batch: int = 256, checkpoints: Path | None = None,
                     save_every: int = 100) -> None:
    """Train and write ``classifier.safetensors``; logs held-out accuracy per head. Resumable
    (:class:`toytrain.common.ResumableLoop`): the state is saved to ``checkpoints`` every ``save_every`` steps."""
    seed_everything(seed)
    start = time.time()
    vae = load_vae(out_dir).eval()
    images = max(64, int(images * scale))
    crops, labels = _dataset(*_round_tripped_set(vae, images, seed + 3), seed=seed)
    val_crops, val_labels = _dataset(*_round_tripped_set(vae, max(32, images // 12), seed + 4), seed=seed + 1)
    log.event("classifier-data", crops=len(crops), seconds=round(time.time() - start, 1))
    model = BoxClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    steps = max(2, epochs * len(crops) // batch)
    loop = ResumableLoop("classifier", checkpoints or checkpoint_dir(f"classifier-{steps}-seed{seed}"), log, gen,
                         parts={"model": model, "optimizer": opt}, every=save_every, started=start)
    for step in range(loop.resume(), steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, 2e-3, warmup=50)
        idx = torch.randint(len(crops), (batch,), generator=gen)
        loss = _loss(model, _augment(crops[idx], gen), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 200 == 0:
            log.event("classifier", step=step + 1, loss=round(loss.item(), 4), seconds=round(loop.seconds(), 1))
        loop.after_step(step + 1, steps)
    model.eval()
    held_out = accuracy(model, val_crops, val_labels)
    uniform = noise_crops(1000, HELD_OUT_NOISE, np.random.default_rng(seed + 5))
    held_out["uniform_noise_read_as_none"] = none_rate(model, uniform)
    log.event("classifier-done", steps=steps, held_out_accuracy={k: round(v, 4) for k, v in held_out.items()},
              held_out_crops=len(val_crops), seconds=round(loop.seconds(), 1))
    save_weights(model, weights_path("classifier", out_dir),
                 {k: f"{v:.4f}" for k, v in held_out.items()})
    loop.finish()
