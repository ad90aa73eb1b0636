"""Does each cross-attention layer of the toy base model look at the object a caption word names?

    python scripts/diagnose_grounding.py [--weights DIR] [--images 96] [--timesteps 200,500,800] [--threads 2]

LoRA-Composer's guidance averages the concept tokens' attention over every cross-attention layer of its loss level
(the toy dataset's: the 16x16 ones), so every such layer should look where the object is, as a real SD model's do.
The base stage's grounding loss trains that only on the layers it reads (``python -m toytrain base
--grounding-layers``). Images drawn as the caption-tuned base's training images (upright objects, three in ten
captions by shape alone) are encoded with the world's VAE, noised at each timestep, and run through the UNet with
their captions; for every layer of 8x8 or finer, the table gives the mean share of an object word's attention that
falls on its object's box (:func:`toytrain.base.in_box_mass`) beside the box's share of the grid, what attention
spread evenly would give.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.layers import cross_attention_layers
from toytrain.base import GroundingProcessor, box_masks, encode_training_set, in_box_mass, install_grounding
from toyworld.models import build_clip_tokenizer, load_toy_pipeline

SHAPE_ONLY_SHARE = 0.3  # the caption-tuned base's training captions
TIMESTEPS = (200, 500, 800)


@torch.no_grad()
def layer_masses(pipe, images: int, timesteps: tuple[int, ...], seed: int = 0
                 ) -> list[tuple[str, int, float, list[float]]]:
    """Per cross-attention layer of 8x8 or finer: ``(name, grid side, box share, [in-box mass per timestep])``."""
    data = encode_training_set(pipe.vae, build_clip_tokenizer(), images, seed, SHAPE_ONLY_SHARE)
    latents, ids, positions, boxes = data["means"].float(), data["ids"], data["positions"], data["boxes"]
    named = positions >= 0
    names = cross_attention_layers(pipe.unet)
    recorded: list[str] = []

    def recorder(index: int) -> GroundingProcessor:
        recorded.append(names[index])
        processor = GroundingProcessor()
        processor.record = True
        return processor

    layers = install_grounding(pipe.unet, recorder)
    hidden = pipe.text_encoder(ids)[0]
    generator = torch.Generator().manual_seed(seed)
    masses: list[list[float]] = [[] for _ in layers]
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=generator)
        steps = torch.full((len(latents),), t)
        pipe.unet(pipe.scheduler.add_noise(latents, noise, steps), steps, encoder_hidden_states=hidden)
        for row, (resolution, processor) in zip(masses, layers, strict=True):
            row.append(float(in_box_mass(processor.probs, positions, boxes, resolution)[named].mean()))
    return [(name, resolution, float(box_masks(boxes, resolution).mean(-1)[named].mean()), row)
            for name, (resolution, _), row in zip(recorded, layers, masses, strict=True)]


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="a toy world's weights folder (default: the "
                                                                   "committed one)")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--timesteps", default=",".join(map(str, TIMESTEPS)))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    timesteps = tuple(int(t) for t in args.timesteps.split(","))
    rows = layer_masses(load_toy_pipeline(args.weights), args.images, timesteps)
    print("| layer | grid | box share | " + " | ".join(f"t = {t}" for t in timesteps) + " |")
    print("|---" * (len(timesteps) + 3) + "|")
    for name, resolution, share, masses in rows:
        print(f"| `{name}` | {resolution}x{resolution} | {share:.2f} | " + " | ".join(f"{m:.2f}" for m in masses)
              + " |")
    print(f"\n{args.images} images, {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
