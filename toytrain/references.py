"""Write the toy benchmark's reference images and masks (``python -m toytrain.references``).

Each concept gets four renders of itself alone (different place, size, rotation and background)
and the matching object masks, under ``datasets/toy/data/<concept>/{image,mask}``. The ED-LoRAs
next to them (``datasets/toy/loras``) come from ``python -m toytrain lora``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from toytrain import TOY_DATASET
from toyworld.concepts import CONCEPTS
from toyworld.world import render

_VIEWS = (("white", 32, 32, 16), ("gray", 28, 36, 13), ("black", 36, 30, 15), ("beach", 30, 34, 14))


def write_references(root: Path = TOY_DATASET, seed: int = 0) -> list[Path]:
    """Render every concept's reference images and masks; returns the written files."""
    written = []
    rng = np.random.default_rng(seed)
    for concept in CONCEPTS.values():
        for n, (background, cx, cy, radius) in enumerate(_VIEWS):
            obj = concept.instance(rng, cx, cy, radius)
            image = render([obj], background)
            silhouette = render([replace(obj, texture="solid", rgb=(255, 255, 255))], "black")
            mask = silhouette.convert("L").point(lambda v: 255 if v > 128 else 0)
            for kind, picture in (("image", image), ("mask", mask)):
                path = root / "data" / concept.id / kind / f"{n:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                picture.save(path)
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """Write the references into the toy dataset folder."""
    parser = argparse.ArgumentParser(prog="python -m toytrain.references", description=__doc__)
    parser.add_argument("--root", type=Path, default=TOY_DATASET)
    args = parser.parse_args(argv)
    print(f"wrote {len(write_references(args.root))} files under {args.root}")


if __name__ == "__main__":
    main()
