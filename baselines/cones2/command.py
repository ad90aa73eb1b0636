"""``bench cones2-train``: train a concept's Cones2 residual text embedding (registered by the baselines plugin)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_train_command(subparsers: Any) -> None:
    """Add ``cones2-train`` to the ``bench`` command."""
    cones = subparsers.add_parser("cones2-train", help="train a concept's Cones2 residual text embedding")
    cones.add_argument("--dataset", default="random")
    cones.add_argument("--concept", required=True)
    cones.add_argument("--assets")
    cones.add_argument("--steps", type=int, default=4000, help="upstream fine-tunes for 4000 steps")
    cones.add_argument("--learning-rate", type=float, default=5e-6)
    cones.add_argument("--seed", type=int, default=0)
    cones.add_argument("--batch-size", type=int, default=1, help="images per step (the paper trained with 4)")
    cones.add_argument("--out", help="residual file (default: <concept>.pt)")
    cones.add_argument("--device", default="cpu")
    cones.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    """Train the concept's residual on its style's base model and write it."""
    from baselines.cones2 import train_residual
    from bench.assets import AssetResolver
    from bench.catalog import load_dataset
    from bench.context import RunContext

    spec = load_dataset(args.dataset)
    if args.concept not in spec.concepts:
        raise ValueError(f"--concept: '{args.concept}' is not in {spec.path}; expected one of {sorted(spec.concepts)}")
    ctx = RunContext(spec, AssetResolver(spec, args.assets), device=args.device)
    concept = spec.concepts[args.concept]
    out = Path(args.out) if args.out else Path(f"{concept.id}.pt")
    train_residual(ctx.base_pipeline(concept.style), concept, ctx.reference_images(concept.id), args.steps, out,
                   learning_rate=args.learning_rate, seed=args.seed, batch_size=args.batch_size)
    print(f"residual of '{concept.id}' written to {out} (use --param cones2.residual_dir={out.parent})")
    return 0
