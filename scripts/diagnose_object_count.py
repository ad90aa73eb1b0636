"""How many objects does the toy base model draw for a prompt that names N of them by class word?

    python scripts/diagnose_object_count.py [--weights DIR] [--seeds 16] [--threads 2]

A layout's global prompt names its objects by class word alone ("a circle, a square, a triangle and a cross on a
black background"), and LoRA-Composer reads that prompt outside the boxes. For N = 1 to 4 the first N shapes of the
world are named that way, in the training captions' own words (:func:`toyworld.world.caption_words`), on the plain
backgrounds in turn, and sampled on the base model (DDIM 25 steps, CFG 5, as the quality gates sample). The objects
drawn are the connected parts of the foreground (:func:`toyworld.classifier.foreground_mask`) of at least
``--min-pixels`` pixels; objects that touch count as one. Prints, per N, the mean count and how many samples hold
each count.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from baselines.sampling import encode_pair, sample_layerwise
from toytrain.gates import GUIDANCE, STEPS
from toyworld.classifier import foreground_mask
from toyworld.models import load_toy_pipeline
from toyworld.world import PLAIN_BACKGROUNDS, SHAPES, ToyObject, caption_words

MOST_NAMED = 4
MIN_PIXELS = 30


def class_word_prompt(count: int, background: str) -> str:
    """The first ``count`` shapes named by class word alone, as a training caption names them."""
    objects = [ToyObject(shape, "red", "solid", 32.0, 32.0, 10.0) for shape in SHAPES[:count]]
    return " ".join(caption_words(objects, list(range(count)), background, shape_only=True)[0])


def count_objects(image: Image.Image, min_pixels: int = MIN_PIXELS) -> int:
    """Connected parts of the image's foreground that hold at least ``min_pixels`` pixels."""
    labels, found = ndimage.label(foreground_mask(image))
    sizes = np.bincount(labels.ravel(), minlength=found + 1)[1:]
    return int((sizes >= min_pixels).sum())


@torch.no_grad()
def sample(pipe, prompt: str, seed: int, steps: int = STEPS) -> Image.Image:
    """One base-model sample of ``prompt``, drawn as the quality gates draw theirs."""
    return sample_layerwise(pipe, encode_pair(pipe, prompt, "", []), seed, 64, 64, steps, GUIDANCE)


def main(argv: list[str] | None = None) -> int:
    """Sample, count and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="a toy world's weights folder (default: the "
                                                                   "committed one)")
    parser.add_argument("--seeds", type=int, default=16, help="samples per N")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--min-pixels", type=int, default=MIN_PIXELS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    pipe = load_toy_pipeline(args.weights)
    pipe.set_progress_bar_config(disable=True)
    backgrounds = list(PLAIN_BACKGROUNDS)
    columns = range(MOST_NAMED + 2)
    print("| named | mean drawn | " + " | ".join(f"{c}{'+' if c == columns[-1] else ''}" for c in columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for named in range(1, MOST_NAMED + 1):
        counts = [count_objects(sample(pipe, class_word_prompt(named, backgrounds[seed % len(backgrounds)]),
                                       4000 + seed, args.steps), args.min_pixels)
                  for seed in range(args.seeds)]
        tally = np.bincount(np.minimum(counts, columns[-1]), minlength=len(columns))
        print(f"| {named} | {np.mean(counts):.2f} | " + " | ".join(str(int(n)) for n in tally) + " |")
    print(f"\n{args.seeds} samples per row, {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
