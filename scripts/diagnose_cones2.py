"""Does a toy Cones2 residual carry its concept? Single-concept samples with and without it, read by the classifier.

    python scripts/diagnose_cones2.py [--seeds 16] [--threads 2]

For each toy concept, "a photo of a {class word} {background}" is sampled on the toy base model (DDIM 25 steps,
CFG 5, as the quality gates sample) twice per seed: with the class word's text-encoder output as it is, and with
the concept's shipped residual (``datasets/toy/cones2/<id>.pt``) added at the class word's positions, as Cones2
edits its prompt. No layout guidance is involved. The toy classifier reads the foreground box: the concept is
recognized when shape and colour are the concept's. The residual's norm is printed beside the norm of the
class word's output it is added to.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from PIL import Image

from baselines.cones2.residual import class_word_length, load_residual
from bench.assets import AssetResolver
from bench.catalog import load_dataset
from bench.seeds import initial_noise
from toytrain.gates import GUIDANCE, STEPS, read_foreground
from toyworld.classifier import load_classifier
from toyworld.concepts import CONCEPTS
from toyworld.models import load_toy_pipeline
from toyworld.world import PLAIN_BACKGROUNDS, background_phrase


@torch.no_grad()
def _embedding(pipe: Any, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids)[0], ids[0]


@torch.no_grad()
def _sample(pipe: Any, cond: torch.Tensor, uncond: torch.Tensor, seed: int) -> Image.Image:
    latents = initial_noise(seed, (1, pipe.unet.config.in_channels, 16, 16), dtype=pipe.unet.dtype)
    return pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, latents=latents, num_inference_steps=STEPS,
                guidance_scale=GUIDANCE, height=64, width=64).images[0]


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    spec = load_dataset("toy")
    assets = AssetResolver(spec, None)
    pipe = load_toy_pipeline()
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier()
    uncond, _ = _embedding(pipe, "")
    backgrounds = list(PLAIN_BACKGROUNDS)
    print("| concept | residual norm / class-word norm | class word: recognized | shape | colour "
          "| + residual: recognized | shape | colour |")
    print("|---|---|---|---|---|---|---|---|")
    for concept in CONCEPTS.values():
        length = class_word_length(pipe.tokenizer, concept.shape)
        residual = load_residual(assets.resolve(f"cones2/{concept.id}.pt"), pipe.text_encoder.config.hidden_size,
                                 length, concept.id)
        first = int(pipe.tokenizer(concept.shape).input_ids[1])
        counts = {"plain": [0, 0, 0], "residual": [0, 0, 0]}
        norms = []
        for seed in range(args.seeds):
            prompt = f"a photo of a {concept.shape} {background_phrase(backgrounds[seed % len(backgrounds)])}"
            cond, ids = _embedding(pipe, prompt)
            at = int(torch.where(ids == first)[0][0])
            edited = cond.clone()
            edited[0, at : at + length] += residual
            norms.append(float(residual.norm() / cond[0, at : at + length].norm()))
            for kind, embedding in (("plain", cond), ("residual", edited)):
                shape, colour, _ = read_foreground(classifier, _sample(pipe, embedding, uncond, 3000 + seed))
                tally = counts[kind]
                tally[0] += shape == concept.shape and colour == concept.colour
                tally[1] += shape == concept.shape
                tally[2] += colour == concept.colour
        cells = [f"{100 * v / args.seeds:.0f} %" for kind in ("plain", "residual") for v in counts[kind]]
        print(f"| {concept.id} | {sum(norms) / len(norms):.2f} | " + " | ".join(cells) + " |")
    print(f"\n{args.seeds} samples per cell, {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
