"""Train the toy CLIP (an open_clip model, config ``toyworld/lcbench_toy_clip.json``) contrastively.

Pairs are whole images with their captions and object box crops with the object's own caption
(sometimes with the background phrase, as CLIP-T's region prompts read), so CLIP-I on box crops and
CLIP-T on class-substituted region prompts both mean something in this world.
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

from metrics.models import toy_clip_files
from toyworld.classifier import square_box
from toyworld.data import render_set
from toyworld.models import save_weights, weights_path
from toyworld.training.common import TrainLog, lr_at, seed_everything
from toyworld.world import background_phrase

CONFIG = toy_clip_files()[0]  # the same config the scorer registers for builtin:toy-clip
MODEL_NAME = CONFIG.stem
MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)
STD = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)


def create_toy_clip() -> torch.nn.Module:
    """An untrained toy CLIP."""
    open_clip.add_model_config(CONFIG)
    return open_clip.create_model(MODEL_NAME)


def _pairs(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Half whole images with captions, half object crops (resized to 64) with object captions."""
    pixels, items = render_set(count, seed=seed)
    rng = np.random.default_rng(seed)
    images, texts = [], []
    for i, item in enumerate(items):
        image = Image.fromarray(pixels[i].permute(1, 2, 0).numpy())
        if i % 2 == 0:
            images.append(image)
            texts.append(item.caption)
            continue
        obj = item.objects[rng.integers(len(item.objects))]
        side = 2 * obj.radius * rng.uniform(0.9, 1.4)
        box = (obj.cx - side / 2, obj.cy - side / 2, obj.cx + side / 2, obj.cy + side / 2)
        images.append(image.crop(square_box(box, 64, 64)).resize((64, 64), Image.Resampling.BICUBIC))
        words = " ".join(["a", *obj.words()])
        texts.append(f"{words} {background_phrase(item.background)}" if rng.random() < 0.4 else words)
    tensor = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 255
    return (tensor - MEAN) / STD, texts


def train_clip(out_dir: Path, *, seed: int = 0, log: TrainLog, scale: float = 1.0, pairs: int = 30000,
               steps: int = 1000, batch: int = 128) -> None:
    """Train and write ``clip.safetensors`` (open_clip state dict); logs held-out retrieval accuracy."""
    seed_everything(seed)
    start = time.time()
    pairs, steps = max(64, int(pairs * scale)), max(2, int(steps * scale))
    images, texts = _pairs(pairs, seed + 5)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    tokens = tokenizer(texts)
    val_images, val_texts = _pairs(512, seed + 6)
    log.event("clip-data", pairs=pairs, seconds=round(time.time() - start, 1))
    model = create_toy_clip().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, 1e-3, warmup=100)
        idx = torch.randint(len(images), (batch,), generator=gen)
        image_features, text_features, logit_scale = model(images[idx], tokens[idx])
        logits = logit_scale * image_features @ text_features.T
        target = torch.arange(batch)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        if (step + 1) % 100 == 0:
            log.event("clip", step=step + 1, loss=round(loss.item(), 4), seconds=round(time.time() - start, 1))
    model.eval()
    with torch.no_grad():
        image_features = model.encode_image(val_images, normalize=True)
        text_features = model.encode_text(tokenizer(val_texts), normalize=True)
        hits = (image_features @ text_features.T).argmax(1) == torch.arange(len(val_texts))
    log.event("clip-done", steps=steps, held_out_image_to_text_top1=round(float(hits.float().mean()), 4),
              held_out_pairs=len(val_texts), seconds=round(time.time() - start, 1))
    save_weights(model, weights_path("clip", out_dir))
