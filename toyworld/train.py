"""Train the toy world, one stage at a time: ``python -m toyworld.train {vae,base,lora,clip,classifier}``.

Stages depend on each other in that order (base needs the VAE, LoRAs need the base, the classifier
trains on VAE round-trips). Every stage has a fixed seed and fixed step counts, and fits in under
60 minutes on 2 CPU cores; ``--threads`` sets torch's thread count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from toyworld.models import WEIGHTS_DIR
from toyworld.training.common import TrainLog


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run one training stage."""
    parser = argparse.ArgumentParser(prog="python -m toyworld.train", description=__doc__)
    parser.add_argument("stage", choices=["vae", "base", "lora", "clip", "classifier"])
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder (default: the committed one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concepts", help="lora stage: comma-separated concept ids (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply step counts (0.01: smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log = TrainLog(args.out)
    if args.stage == "vae":
        from toyworld.training.vae import train_vae

        train_vae(args.out, seed=args.seed, log=log, crop_steps=max(2, int(1500 * args.scale)),
                  full_steps=max(2, int(500 * args.scale)), images=max(64, int(20000 * args.scale)))
    elif args.stage == "base":
        from toyworld.training.base import train_base

        train_base(args.out, seed=args.seed, log=log, scale=args.scale)
    elif args.stage == "lora":
        from toyworld.training.lora import train_loras

        train_loras(args.out, seed=args.seed, log=log, scale=args.scale,
                    concepts=args.concepts.split(",") if args.concepts else None)
    elif args.stage == "clip":
        from toyworld.training.clip import train_clip

        train_clip(args.out, seed=args.seed, log=log, scale=args.scale)
    else:
        from toyworld.training.classifier import train_classifier

        train_classifier(args.out, seed=args.seed, log=log, scale=args.scale)


if __name__ == "__main__":
    main()
