"""The arguments of the toy world's commands (``bench toy-train``, ``bench toy-gates`` and ``python -m toytrain``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from toytrain import (
    BASE_GROUNDING_LAYERS,
    GROUNDING_LAYERS,
    GROUNDING_TRAINS,
    LORA_DIR,
    LORA_DISTRACTOR_SHARE,
    LORA_DISTRACTORS,
    LORA_GROUNDING_TRAINS,
    LORA_GROUNDING_WEIGHT,
    LORA_UNET_LR,
    LORA_UNET_TARGETS,
    LORA_VIEW_SIZES,
    UNET_TARGET_SETS,
)
from toyworld import SCHEDULE_NAMES, UNET_SIZE_NAMES, WEIGHTS_DIR
from toyworld.concepts import DISTRACTOR_KINDS, VIEW_SIZES
from toyworld.world import MAX_OBJECTS, OBJECT_COUNTS

STAGES = ("vae", "base", "lora", "clip", "classifier")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The training command's arguments."""
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder (default: the committed one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concepts", help="lora stage: comma-separated concept ids (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply step counts (0.01: smoke run)")
    parser.add_argument("--schedule", choices=SCHEDULE_NAMES, default="zero-snr-v",
                        help="base stage: the noise schedule and prediction target (default: the committed world's)")
    parser.add_argument("--unet", choices=UNET_SIZE_NAMES, default="small",
                        help="base stage: the UNet's size (default: small, the committed world's)")
    parser.add_argument("--word-weight", type=float, default=0.1,
                        help="base stage: weight of the text encoder's word-identity loss "
                             "(default: 0.1, the committed world's; 0: none)")
    parser.add_argument("--init-from", type=Path,
                        help="base stage: warm-start from this weights folder's UNet and text encoder")
    parser.add_argument("--steps", type=int, default=3800,
                        help="base stage: optimizer steps (default: 3800, the committed world's; --scale multiplies)")
    parser.add_argument("--peak-lr", type=float, default=1e-3,
                        help="base stage: peak learning rate (default: 1e-3, the committed world's)")
    parser.add_argument("--shape-only-share", type=float, default=0.0,
                        help="base stage: share of the training captions that name every object by its shape "
                             "alone ('a circle and a square on a beach'), as a layout's global prompt does "
                             "(default: 0, every object named with its colour)")
    parser.add_argument("--max-objects", type=int, choices=sorted(OBJECT_COUNTS), default=MAX_OBJECTS,
                        help=f"base stage: most objects in a training image (default: {MAX_OBJECTS}, the committed "
                             "world's; 4: a fifth of the images hold four, as a four-region layout's global prompt "
                             "names)")
    parser.add_argument("--grounding-layers", choices=GROUNDING_LAYERS, default=BASE_GROUNDING_LAYERS,
                        help="base stage: the cross-attention layers the grounding loss reads: last (the last "
                             "16x16 and the last 8x8 one) or all (every layer of 8x8 or finer) "
                             f"(default: {BASE_GROUNDING_LAYERS}, the committed world's)")
    parser.add_argument("--grounding-weight", type=float, default=LORA_GROUNDING_WEIGHT,
                        help="lora stage: weight of the loss pulling the concept tokens' attention into the "
                             f"object's box (default: {LORA_GROUNDING_WEIGHT:g}, the committed world's; 0: none)")
    parser.add_argument("--grounding-trains", choices=GROUNDING_TRAINS, default=LORA_GROUNDING_TRAINS,
                        help="lora stage: what the grounding loss trains: all (token embeddings, text-encoder and "
                             "UNet LoRAs) or text (no UNet LoRA) "
                             f"(default: {LORA_GROUNDING_TRAINS}, the committed world's)")
    parser.add_argument("--distractor-share", type=float, default=LORA_DISTRACTOR_SHARE,
                        help="lora stage: share of the training views that also hold one or two other objects, "
                             f"named in the caption (default: {LORA_DISTRACTOR_SHARE:g}, the committed world's)")
    parser.add_argument("--distractors", choices=DISTRACTOR_KINDS, default=LORA_DISTRACTORS,
                        help="lora stage: which other objects: differ (the concept's shape or its colour differs) "
                             "or disjoint (neither its shape nor its colour is the concept's) "
                             f"(default: {LORA_DISTRACTORS}, the committed world's)")
    parser.add_argument("--unet-targets", choices=UNET_TARGET_SETS, default=LORA_UNET_TARGETS,
                        help="lora stage: which UNet projections get a LoRA: all (every attention projection, as "
                             "Mix-of-Show trains ED-LoRAs) or cross-kvo (the cross-attention key, value and output "
                             "projections only, the ones LoRA-Composer's region injection reads) "
                             f"(default: {LORA_UNET_TARGETS}, the committed world's)")
    parser.add_argument("--unet-lora-lr", type=float, default=LORA_UNET_LR,
                        help="lora stage: peak learning rate of the UNet LoRA; the text encoder's LoRA keeps 1e-3 and "
                             f"the token embeddings 5e-3 (default: {LORA_UNET_LR:g}, the committed world's)")
    parser.add_argument("--view-sizes", choices=VIEW_SIZES, default=LORA_VIEW_SIZES,
                        help="lora stage: the radius range of the training views that show the concept alone: alone "
                             f"({VIEW_SIZES['alone'][0]:g}-{VIEW_SIZES['alone'][1]:g} px, the sizes of a single object "
                             "in the world's images) or among-others "
                             f"({VIEW_SIZES['among-others'][0]:g}-{VIEW_SIZES['among-others'][1]:g} px, the sizes "
                             f"objects have beside others) (default: {LORA_VIEW_SIZES}, the committed world's)")


def add_gates_arguments(parser: argparse.ArgumentParser) -> None:
    """The gates command's arguments."""
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--loras", type=Path, default=LORA_DIR)
    parser.add_argument("--seeds", type=int, default=8, help="samples per base prompt; LoRA samples = 4x this")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25, help="sampling steps (the gates are defined at 25)")
    parser.add_argument("--guidance", type=float, default=5.0, help="CFG scale (the gates are defined at 5)")
    parser.add_argument("--out", type=Path, help="write the report here (default: <weights>/gates.json)")
