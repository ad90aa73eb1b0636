"""Train the toy CLIP (an open_clip model, config ``toyworld/lcbench_toy_clip.json``) contrastively.

Pairs are made of the views the scorer shows it and the texts it gives it:

- images: whole scenes, and box crops around one object (square-padded with white as ``pad_square``
  does, or cut as they are, as ``center_crop`` does), half of them passed through the toy VAE so
  decoded samples are in its domain; empty crops (no object) are paired with their background alone;
- texts: the full description ("a red striped circle"), and the class word alone ("a circle"), as
  CLIP-T's class substitution reads, each with or without the background phrase and with or without
  the official prefix "A photo depicts ".

Identical texts in a batch are all positives of each other (a multi-positive contrastive loss), since
many crops share "a circle".
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from toytrain.classifier import round_trip
from toytrain.common import ResumableLoop, TrainLog, checkpoint_dir, lr_at, seed_everything
from toytrain.data import render_set
from toyworld.clip import CLIP_CONFIG, untrained_clip
from toyworld.models import load_vae, save_weights, weights_path
from toyworld.world import SHAPES, ToyImage, background_phrase

OFFICIAL_PREFIX = "A photo depicts "  # what clip_t@official puts before the caption

MODEL_NAME = CLIP_CONFIG.stem  # the config the scorer registers for builtin:toy-clip
MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)


def create_toy_clip() -> torch.nn.Module:
    """An untrained toy CLIP."""
    return untrained_clip()[0]


def _text(words: list[str], background: str, rng: np.random.Generator) -> str:
    """One text for an object: its words, or the class word alone; maybe the background; maybe the prefix."""
    text = " ".join(["a", *(words if rng.random() < 0.5 else words[-1:])])
    if rng.random() < 0.4:
        text = f"{text} {background_phrase(background)}"
    return OFFICIAL_PREFIX + text if rng.random() < 0.3 else text


def _class_caption(item: ToyImage) -> str:
    """The image's caption with each object named by its class word alone ('a circle and a square ...')."""
    words = item.caption.split(" ")
    kept = [w for i, w in enumerate(words) if i not in item.word_objects or w.rstrip(",") in SHAPES]
    return " ".join(kept)


def _crop(image: Image.Image, box: tuple[float, float, float, float], rng: np.random.Generator) -> Image.Image:
    """The box as the scorer sees it: padded to a square with white, or cut as it is (model transform after)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = image.crop((max(0, x0), max(0, y0), min(64, x1), min(64, y1)))
    if rng.random() < 0.5:
        side = max(crop.size)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
        crop = canvas
    return crop.resize((64, 64), Image.Resampling.BICUBIC)


def _empty_box(item: ToyImage, rng: np.random.Generator) -> tuple[float, float, float, float] | None:
    """A box of 20-32 px that touches no object, or None when none was found."""
    for _ in range(20):
        w, h = rng.uniform(20, 32, size=2)
        x0, y0 = rng.uniform(0, 64 - w), rng.uniform(0, 64 - h)
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] < o.box[0] or box[0] > o.box[2] or box[3] < o.box[1] or box[1] > o.box[3] for o in item.objects):
            return box
    return None


def _pairs(count: int, seed: int, vae: torch.nn.Module) -> tuple[torch.Tensor, list[str]]:
    """Whole images, object crops and empty crops with their texts (see the module docstring)."""
    pixels, items = render_set(count, seed=seed)
    half = count // 2
    pixels[:half] = round_trip(vae, pixels[:half])
    rng = np.random.default_rng(seed)
    images, texts = [], []
    for i, item in enumerate(items):
        image = Image.fromarray(pixels[i].permute(1, 2, 0).numpy())
        kind = rng.random()
        if kind < 0.3:
            images.append(image)
            caption = item.caption if rng.random() < 0.5 else _class_caption(item)
            texts.append(OFFICIAL_PREFIX + caption if rng.random() < 0.3 else caption)
            continue
        empty = _empty_box(item, rng) if kind < 0.42 else None
        if empty is not None:
            images.append(_crop(image, empty, rng))
            phrase = background_phrase(item.background).removeprefix("on ")
            texts.append(OFFICIAL_PREFIX + phrase if rng.random() < 0.3 else phrase)
            continue
        obj = item.objects[rng.integers(len(item.objects))]
        w, h = 2 * obj.radius * rng.uniform(1.0, 1.5, size=2)
        box = (obj.cx - w / 2, obj.cy - h / 2, obj.cx + w / 2, obj.cy + h / 2)
        images.append(_crop(image, box, rng))
        texts.append(_text(obj.words(), item.background, rng))
    tensor = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
    return (tensor - MEAN) / STD, texts


def multi_positive_loss(logits: torch.Tensor, same_text: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss where every pair with the same text is a positive (rows sum to one)."""
    target = same_text.float() / same_text.sum(1, keepdim=True)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train_clip(out_dir: Path, *, seed: int = 0, log: TrainLog, scale: float = 1.0, pairs: int = 30000,
               steps: int = 1000, batch: int = 128, checkpoints: Path | None = None, save_every: int = 100) -> None:
    """Train and write ``clip.safetensors`` (open_clip state dict); logs held-out retrieval accuracy. Resumable
    (:class:`toytrain.common.ResumableLoop`): the state is saved to ``checkpoints`` every ``save_every`` steps."""
    seed_everything(seed)
    start = time.time()
    pairs, steps = max(64, int(pairs * scale)), max(2, int(steps * scale))
    vae = load_vae(out_dir).eval()
    images, texts = _pairs(pairs, seed + 5, vae)
    model = create_toy_clip().train()  # registers the config, so the tokenizer below is the model's own
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    tokens = tokenizer(texts)
    text_ids = torch.tensor([hash(t) for t in texts])
    val_images, val_texts = _pairs(512, seed + 6, vae)
    log.event("clip-data", pairs=pairs, seconds=round(time.time() - start, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    loop = ResumableLoop("clip", checkpoints or checkpoint_dir(f"clip-{steps}-seed{seed}"), log, gen,
                         parts={"model": model, "optimizer": opt}, every=save_every, started=start)
    for step in range(loop.resume(), steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, 1e-3, warmup=100)
        idx = torch.randint(len(images), (batch,), generator=gen)
        image_features, text_features, logit_scale = model(images[idx], tokens[idx])
        logits = logit_scale * image_features @ text_features.T
        loss = multi_positive_loss(logits, text_ids[idx][:, None] == text_ids[idx][None, :])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        if (step + 1) % 100 == 0:
            log.event("clip", step=step + 1, loss=round(loss.item(), 4), seconds=round(loop.seconds(), 1))
        loop.after_step(step + 1, steps)
    model.eval()
    with torch.no_grad():
        image_features = model.encode_image(val_images, normalize=True)
        text_features = model.encode_text(tokenizer(val_texts), normalize=True)
        best = (image_features @ text_features.T).argmax(1)
        hits = torch.tensor([val_texts[int(b)] == val_texts[i] for i, b in enumerate(best)])
    log.event("clip-done", steps=steps, held_out_image_to_text_top1=round(float(hits.float().mean()), 4),
              held_out_pairs=len(val_texts), seconds=round(loop.seconds(), 1))
    save_weights(model, weights_path("clip", out_dir))
    loop.finish()
