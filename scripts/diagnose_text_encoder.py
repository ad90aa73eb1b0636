"""Can the toy UNet tell the shapes apart from what the text encoder gives it? Word outputs compared by cosine.

    python scripts/diagnose_text_encoder.py [--weights toyworld/weights]

For "a {colour} {shape} on a white background", the text encoder's output at the shape word is compared across
the four shapes after the same colour, and the output at the colour word across the five colours before the same
shape. Printed: per pair of shapes (colours), the mean cosine over the other attribute. A cosine near 1 means the
UNet receives nearly the same key and value for two words, whatever the prompt asked for.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from toyworld import WEIGHTS_DIR
from toyworld.models import load_toy_pipeline
from toyworld.world import COLOURS, SHAPES


@torch.no_grad()
def word_outputs(weights: Path) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
    """(colour, shape) -> the text encoder's outputs at the colour word and at the shape word."""
    pipe = load_toy_pipeline(weights)
    outputs = {}
    for colour, shape in itertools.product(COLOURS, SHAPES):
        ids = pipe.tokenizer(f"a {colour} {shape} on a white background", padding="max_length", max_length=77,
                             return_tensors="pt").input_ids
        hidden = pipe.text_encoder(ids)[0][0]
        outputs[colour, shape] = hidden[2], hidden[3]  # SOT, "a", colour, shape: one token each
    return outputs


def mean_cosines(outputs: dict, words: tuple[str, ...], others: tuple[str, ...], index: int) -> dict[str, float]:
    """Per pair of ``words``, the cosine of their outputs (``index`` 0: colour word, 1: shape word), averaged
    over ``others`` (the other attribute of the prompt)."""
    def key(word: str, other: str) -> tuple[str, str]:
        return (word, other) if index == 0 else (other, word)

    return {f"{a}/{b}": round(sum(float(torch.cosine_similarity(outputs[key(a, o)][index], outputs[key(b, o)][index],
                                                                 dim=0)) for o in others) / len(others), 3)
            for a, b in itertools.combinations(words, 2)}


def main(argv: list[str] | None = None) -> None:
    """Print the cosines between shape words and between colour words."""
    parser = argparse.ArgumentParser(prog="python scripts/diagnose_text_encoder.py", description=__doc__)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    outputs = word_outputs(args.weights)
    shapes = mean_cosines(outputs, SHAPES, tuple(COLOURS), 1)
    colours = mean_cosines(outputs, tuple(COLOURS), SHAPES, 0)
    print(f"shape words, same colour:  {shapes}  (mean {sum(shapes.values()) / len(shapes):.3f})")
    print(f"colour words, same shape:  {colours}  (mean {sum(colours.values()) / len(colours):.3f})")


if __name__ == "__main__":
    main()
