"""Train the toy world, one stage at a time: ``python -m toytrain {vae,base,lora,clip,classifier}``
(or ``bench toy-train STAGE``).

Stages depend on each other in that order (base needs the VAE, LoRAs need the base, the classifier
trains on VAE round-trips). Every stage has a fixed seed and fixed step counts, and fits in under
60 minutes on 2 CPU cores; ``--threads`` sets torch's thread count.
"""

from __future__ import annotations

import argparse

from toytrain.arguments import add_train_arguments


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run one training stage."""
    parser = argparse.ArgumentParser(prog="python -m toytrain", description=__doc__)
    add_train_arguments(parser)
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the training stage ``args`` names."""
    import torch

    from toytrain.common import TrainLog

    torch.set_num_threads(args.threads)
    log = TrainLog(args.out)
    if args.stage == "vae":
        from toytrain.vae import train_vae

        train_vae(args.out, seed=args.seed, log=log, crop_steps=max(2, int(1500 * args.scale)),
                  full_steps=max(2, int(500 * args.scale)), images=max(64, int(20000 * args.scale)))
    elif args.stage == "base":
        from toytrain.base import train_base

        train_base(args.out, seed=args.seed, log=log, scale=args.scale, schedule=args.schedule,
                   word_weight=args.word_weight, unet_size=args.unet, init_from=args.init_from,
                   steps=args.steps, peak_lr=args.peak_lr, shape_only_share=args.shape_only_share,
                   max_objects=args.max_objects, grounded_layers=args.grounding_layers)
    elif args.stage == "lora":
        from toytrain.lora import train_loras

        train_loras(args.out, seed=args.seed, log=log, scale=args.scale,
                    concepts=args.concepts.split(",") if args.concepts else None,
                    grounding_weight=args.grounding_weight, grounding_trains=args.grounding_trains,
                    distractor_share=args.distractor_share, distractors=args.distractors,
                    unet_targets=args.unet_targets, unet_lr=args.unet_lora_lr, view_sizes=args.view_sizes)
    elif args.stage == "clip":
        from toytrain.clip import train_clip

        train_clip(args.out, seed=args.seed, log=log, scale=args.scale)
    else:
        from toytrain.classifier import train_classifier

        train_classifier(args.out, seed=args.seed, log=log, scale=args.scale)
    return 0
