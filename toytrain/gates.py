"""Quality gates of the trained toy world, measured with the per-box classifier.

1. Base model: samples of a single prompted shape ("a red circle on a white background") are
   recognized (shape and colour right) at >= 80 %.
2. Each concept's ED-LoRA alone ("a <ruby1> <ruby2> on a white background", LoRA merged at weight 1,
   layer-wise tokens) yields its concept (shape and colour right) at >= 80 %.

The object is located by its foreground box (plain backgrounds only, so the border gives the
background colour). ``python -m toytrain.gates`` writes ``toyworld/weights/gates.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from baselines.sampling import encode_pair, sample_layerwise
from bench.lora.apply import lora_merged
from bench.lora.formats import load_lora
from toytrain.arguments import add_gates_arguments
from toyworld.classifier import BoxClassifier, border_colour, classify_boxes, foreground_box, load_classifier
from toyworld.concepts import CONCEPTS, concept_caption
from toyworld.models import load_toy_pipeline
from toyworld.world import COLOURS, PLAIN_BACKGROUNDS, SHAPES, background_phrase

GATE = 0.80
STEPS = 25
GUIDANCE = 5.0
# The smallest growth of the foreground extent (steps of 0.05) at which the gates read perfect renders of every shape,
# colour, texture and plain background right in >= 98 % (tests/test_toyworld_weights.py): the tight extent read 137 of
# 180 (squares 2 of 45), 1.2 176, 1.25 178.
READING_MARGIN = 1.25


def reading_box(extent: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The square the gates read around a sample's foreground ``extent``: grown about its centre by
    :data:`READING_MARGIN`, as the classifier was trained on crops of at least 0.8x an object's box while a
    drawn square fills only 0.74 of its box, so that a crop of its tight extent shows none of its edges."""
    x0, y0, x1, y1 = extent
    half = max(x1 - x0, y1 - y0) * READING_MARGIN / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - half, cy - half, cx + half, cy + half


def read_foreground(model: BoxClassifier, image: Image.Image) -> tuple[str, str, str]:
    """(shape, colour, texture) the classifier reads in the box of the foreground of a plain-background sample."""
    extent = foreground_box(image)
    if extent is None:
        return "none", "", ""
    prediction = classify_boxes(model, image, [reading_box(extent)])[0]
    return prediction.shape, prediction.colour, prediction.texture


def background_right(image: Image.Image, background: str, threshold: int = 60) -> bool:
    """Whether a sample's border (its median colour) is the prompted plain background, within the
    foreground threshold of :func:`toyworld.classifier.foreground_box`."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    return bool(np.abs(border_colour(pixels) - PLAIN_BACKGROUNDS[background]).sum() <= threshold)


def base_gate(pipe: Any, model: BoxClassifier, seeds: int, shapes: Sequence[str] = SHAPES, steps: int = STEPS,
              guidance: float = GUIDANCE) -> dict[str, Any]:
    """Recognition rate of single-shape prompts over every shape x colour, rotating plain backgrounds."""
    hits: dict[str, list[bool]] = defaultdict(list)
    backgrounds = list(PLAIN_BACKGROUNDS)
    for shape in shapes:
        for c, colour in enumerate(COLOURS):
            for seed in range(seeds):
                background = backgrounds[(SHAPES.index(shape) * len(COLOURS) + c + seed) % len(backgrounds)]
                prompt = f"a {colour} {shape} {background_phrase(background)}"
                embeddings = encode_pair(pipe, prompt, "", [])
                image = sample_layerwise(pipe, embeddings, 1000 + seed, 64, 64, steps, guidance)
                got_shape, got_colour, _ = read_foreground(model, image)
                ok = got_shape == shape and got_colour == colour
                for key in ("all", f"shape:{shape}", f"colour:{colour}"):
                    hits[key].append(ok)
                hits["shape_right"].append(got_shape == shape)
                hits["colour_right"].append(got_colour == colour)
                hits["background_right"].append(background_right(image, background))
    return {key: round(sum(v) / len(v), 4) for key, v in hits.items()} | {"images": len(hits["all"])}


def lora_gate(pipe: Any, model: BoxClassifier, seeds: int, lora_dir: Path,
              concepts: Sequence[str] = tuple(CONCEPTS), steps: int = STEPS, guidance: float = GUIDANCE
              ) -> dict[str, Any]:
    """Per concept, the rate at which its LoRA alone yields it (shape and colour; texture reported)."""
    results: dict[str, Any] = {}
    backgrounds = list(PLAIN_BACKGROUNDS)
    for concept in (CONCEPTS[c] for c in concepts):
        lora = load_lora(lora_dir / f"{concept.id}.safetensors", where=f"concept '{concept.id}'")
        found, textured, shapes, colours = [], [], [], []
        with lora_merged(pipe.unet, pipe.text_encoder, [lora], [1.0]):
            for seed in range(seeds):
                prompt = concept_caption(concept, backgrounds[seed % len(backgrounds)])
                embeddings = encode_pair(pipe, prompt, "", [lora])
                image = sample_layerwise(pipe, embeddings, 2000 + seed, 64, 64, steps, guidance)
                shape, colour, texture = read_foreground(model, image)
                found.append(shape == concept.shape and colour == concept.colour)
                textured.append(found[-1] and texture == concept.texture)
                shapes.append(shape == concept.shape)
                colours.append(colour == concept.colour)
        results[concept.id] = {"rate": round(sum(found) / seeds, 4), "shape_right": round(sum(shapes) / seeds, 4),
                               "colour_right": round(sum(colours) / seeds, 4),
                               "with_texture": round(sum(textured) / seeds, 4), "images": seeds}
    return results


def main(argv: list[str] | None = None) -> None:
    """Measure both gates and write them (with pass/fail) to ``<weights>/gates.json``."""
    parser = argparse.ArgumentParser(prog="python -m toytrain.gates", description=__doc__)
    add_gates_arguments(parser)
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Measure the gates as ``args`` say."""
    torch.set_num_threads(args.threads)
    start = time.time()
    pipe = load_toy_pipeline(args.weights)
    pipe.set_progress_bar_config(disable=True)
    model = load_classifier(args.weights)
    base = base_gate(pipe, model, args.seeds, steps=args.steps, guidance=args.guidance)
    loras = lora_gate(pipe, model, 4 * args.seeds, args.loras, steps=args.steps, guidance=args.guidance)
    report = {
        "gate": GATE,
        "sampler": f"DDIM {args.steps} steps, CFG {args.guidance:g}, 64x64",
        "base_single_shape": base | {"passed": base["all"] >= GATE},
        "concept_loras": {k: v | {"passed": v["rate"] >= GATE} for k, v in loras.items()},
        "seconds": round(time.time() - start, 1),
    }
    path = args.out or args.weights / "gates.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    main()
