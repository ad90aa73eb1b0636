"""The built-in tiny benchmark's assets: ED-LoRA files and reference images, generated offline.

:func:`ensure_random_assets` writes, once and deterministically (fixed seeds, no network), one ED-LoRA
per concept of ``datasets/random.yaml`` matching :func:`randomworld.models.build_random_pipeline`, plus
procedural reference images (a coloured shape on a plain background), a mask folder for one
concept, and the pose and sketch condition images of the image-guided scene. Generation happens
in a temporary sibling folder that is renamed into place only when complete, so a killed generation
never leaves half-written assets behind.

The files use every ED-LoRA spelling the loaders accept: the research key spelling
(``to_k_lora.down.weight``) and the main spelling (``to_k.lora_down.weight``); ``.pth``/``.pt``
via ``torch.save`` and one ``.safetensors`` with flattened ``params.<part>.<key>`` keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from safetensors.torch import save_file

RANDOM_DATASET_VERSION = "2"
MARKER_NAME = ".complete.json"

LORA_RANK = 4
TEXT_LAYERS = 2  # the tiny text encoder's depth and width (randomworld.models; a test checks they match)
TEXT_DIM = 32
IMAGE_SIZE = 64
REFERENCES_PER_CONCEPT = 4
_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
_TEXT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
# Standard deviations of the random LoRA factors: up @ down then has entries of std ~0.05, about half
# the std of the tiny layers' default-initialised weights: visible in outputs, far from overflow.
_LORA_STD = 0.16
_EMBEDDING_STD = 0.05


@dataclass(frozen=True)
class RandomConcept:
    """How one tiny concept's assets look on disk."""

    id: str
    tokens: tuple[str, str]
    lora_file: str  # relative to the asset root; the suffix picks torch.save or safetensors
    spelling: str  # 'research' (to_k_lora.down) or 'main' (to_k.lora_down)
    colour: tuple[int, int, int]
    background_colour: tuple[int, int, int]
    shape: str  # 'ellipse', 'rectangle', 'triangle', 'diamond'
    masks: bool = False

    @property
    def references(self) -> str:
        """The reference image folder, relative to the asset root."""
        return f"data/{self.id}/image"

    @property
    def mask_folder(self) -> str:
        """The mask folder, relative to the asset root."""
        return f"data/{self.id}/mask"


RANDOM_CONCEPTS: tuple[RandomConcept, ...] = (
    RandomConcept(
        "cat",
        ("<cat1>", "<cat2>"),
        "loras/cat.pth",
        "research",
        (230, 140, 30),
        (245, 245, 235),
        "ellipse",
        masks=True,
    ),
    RandomConcept(
        "dog", ("<dog1>", "<dog2>"), "loras/dog.pth", "main", (120, 70, 30), (220, 235, 250), "rectangle"
    ),
    RandomConcept(
        "man",
        ("<man1>", "<man2>"),
        "loras/man.safetensors",
        "main",
        (40, 70, 200),
        (235, 235, 235),
        "triangle",
    ),
    RandomConcept(
        "girl",
        ("<girl1>", "<girl2>"),
        "loras/girl.pth",
        "research",
        (230, 90, 170),
        (250, 245, 200),
        "ellipse",
    ),
    RandomConcept(
        "boy", ("<boy1>", "<boy2>"), "loras/boy.pt", "main", (40, 170, 70), (250, 230, 230), "diamond"
    ),
    RandomConcept(
        "castle",
        ("<castle1>", "<castle2>"),
        "loras/castle.pth",
        "research",
        (110, 110, 120),
        (150, 200, 240),
        "rectangle",
    ),
)


def ensure_random_assets(root: Path) -> Path:
    """Generate the tiny benchmark's assets into ``root`` unless a completion marker of this version is there.

    Returns ``root``. A folder with a marker of another version is replaced; a non-empty folder without
    any marker is refused (it is not ours to delete).
    """
    root = Path(root).expanduser()
    if _is_complete(root):
        return root
    if root.exists():
        if (root / MARKER_NAME).exists() or (root.is_dir() and not any(root.iterdir())):
            shutil.rmtree(root)
        else:
            raise FileExistsError(
                f"{root}: expected a tiny asset folder (with {MARKER_NAME}) or no folder at all; "
                "it exists without a completion marker, remove it and rerun"
            )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        _generate(tmp)
        try:
            tmp.rename(root)
        except OSError:
            if not _is_complete(root):  # another process finishing first is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _is_complete(root: Path) -> bool:
    marker = root / MARKER_NAME
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("version") == RANDOM_DATASET_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def _generate(folder: Path) -> None:
    """Write every asset into ``folder`` and, last, the completion marker listing each file's hash."""
    for index, concept in enumerate(RANDOM_CONCEPTS):
        _write_lora(folder / concept.lora_file, concept, seed=1000 + index)
        _write_references(folder, concept)
    _write_conditions(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    manifest = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    marker = {"version": RANDOM_DATASET_VERSION, "files": manifest}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=1, sort_keys=True), encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# ED-LoRA files


def random_lora_shapes() -> dict[str, tuple[int, int]]:
    """``(out_features, in_features)`` of every layer an ED-LoRA touches in the tiny pipeline.

    UNet keys: attn1/attn2 ``to_q``/``to_k``/``to_v``/``to_out.0`` of all 16 transformer blocks, in
    down -> mid -> up order; text-encoder keys: every self-attention projection.
    """
    from randomworld.models import random_unet_config  # deferred: it imports diffusers

    config = random_unet_config()
    channels = list(config["block_out_channels"])
    text_dim = int(config["cross_attention_dim"])
    blocks: list[tuple[str, int]] = []
    for b, kind in enumerate(config["down_block_types"]):
        if kind.startswith("CrossAttn"):
            blocks += [
                (f"down_blocks.{b}.attentions.{a}", channels[b]) for a in range(config["layers_per_block"])
            ]
    blocks.append(("mid_block.attentions.0", channels[-1]))
    for b, kind in enumerate(config["up_block_types"]):
        if kind.startswith("CrossAttn"):
            width = channels[::-1][b]
            blocks += [
                (f"up_blocks.{b}.attentions.{a}", width) for a in range(config["layers_per_block"] + 1)
            ]
    shapes: dict[str, tuple[int, int]] = {}
    for block, width in blocks:
        for attn in ("attn1", "attn2"):
            for proj in _PROJECTIONS:
                in_features = text_dim if attn == "attn2" and proj in ("to_k", "to_v") else width
                shapes[f"unet:{block}.transformer_blocks.0.{attn}.{proj}"] = (width, in_features)
    for layer in range(TEXT_LAYERS):
        for proj in _TEXT_PROJECTIONS:
            shapes[f"text_encoder:text_model.encoder.layers.{layer}.self_attn.{proj}"] = (
                TEXT_DIM,
                TEXT_DIM,
            )
    return shapes


def cross_attention_layer_count() -> int:
    """Rows of a layer-wise embedding: one per cross-attention layer of the tiny UNet (16)."""
    return sum(1 for key in random_lora_shapes() if key.endswith("attn2.to_q"))


def _lora_key(module: str, side: str, spelling: str) -> str:
    if spelling == "research":
        return f"{module}_lora.{side}.weight"
    return f"{module}.lora_{side}.weight"


def random_edlora_params(concept: RandomConcept, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """The ED-LoRA ``params`` dict of one concept: random, small, reproducible from ``seed``."""
    generator = torch.Generator("cpu").manual_seed(seed)
    params: dict[str, dict[str, torch.Tensor]] = {"new_concept_embedding": {}, "text_encoder": {}, "unet": {}}
    layers = cross_attention_layer_count()
    for token in concept.tokens:
        params["new_concept_embedding"][token] = (
            torch.randn(layers, TEXT_DIM, generator=generator) * _EMBEDDING_STD
        )
    for key, (out_features, in_features) in random_lora_shapes().items():
        part, module = key.split(":", 1)
        down = torch.randn(LORA_RANK, in_features, generator=generator) * _LORA_STD
        up = torch.randn(out_features, LORA_RANK, generator=generator) * _LORA_STD
        params[part][_lora_key(module, "down", concept.spelling)] = down
        params[part][_lora_key(module, "up", concept.spelling)] = up
    return params


def _write_lora(path: Path, concept: RandomConcept, seed: int) -> None:
    params = random_edlora_params(concept, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        flat = {
            f"params.{part}.{key}": tensor.contiguous()
            for part, tensors in params.items()
            for key, tensor in tensors.items()
        }
        save_file(flat, str(path), metadata={"format": "edlora"})
    else:
        torch.save({"params": params}, path)


# ----------------------------------------------------------------------------------------------
# Reference images and masks


def _shape_box(index: int) -> tuple[int, int, int, int]:
    """A slightly different placement per reference image, always well inside the canvas."""
    offsets = ((0, 0), (6, -4), (-5, 5), (3, 7))
    dx, dy = offsets[index % len(offsets)]
    size = 34 + 4 * (index % 3)
    x0, y0 = (IMAGE_SIZE - size) // 2 + dx, (IMAGE_SIZE - size) // 2 + dy
    return (x0, y0, x0 + size, y0 + size)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: object) -> None:
    x0, y0, x1, y1 = box
    if shape == "ellipse":
        draw.ellipse(box, fill=fill)
    elif shape == "rectangle":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon(
            [((x0 + x1) // 2, y0), (x1, (y0 + y1) // 2), ((x0 + x1) // 2, y1), (x0, (y0 + y1) // 2)],
            fill=fill,
        )
    else:
        raise ValueError(f"unknown tiny concept shape {shape!r}")


def _write_references(folder: Path, concept: RandomConcept) -> None:
    image_dir = folder / concept.references
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir = folder / concept.mask_folder
    if concept.masks:
        mask_dir.mkdir(parents=True, exist_ok=True)
    for index in range(REFERENCES_PER_CONCEPT):
        box = _shape_box(index)
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), concept.background_colour)
        _draw_shape(ImageDraw.Draw(image), concept.shape, box, concept.colour)
        image.save(image_dir / f"{index:02d}.png")
        if concept.masks:
            mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
            _draw_shape(ImageDraw.Draw(mask), concept.shape, box, 255)
            mask.save(mask_dir / f"{index:02d}.png")


# ----------------------------------------------------------------------------------------------
# Condition images of the image-guided scene (datasets/random.yaml, man_dog_cat_guided)

GUIDED_SCENE = "man_dog_cat_guided"
CONDITION_SIZE = (128, 64)  # width, height: the scene's canvas
POSE_CONDITION = f"conditions/{GUIDED_SCENE}_pose.png"
SKETCH_CONDITION = f"conditions/{GUIDED_SCENE}_sketch.png"
# Pixel boxes (x0, y0, x1, y1) inside the scene's region boxes: man [0, 0.375] x [0, 1] -> the figure;
# dog [0.375, 0.6875] x [0.25, 1] and cat [0.6875, 1] x [0.25, 1] -> the outlined shapes.
_FIGURE_BOX = (6, 2, 42, 62)
_SKETCH_OUTLINES = (("rectangle", (53, 24, 83, 58)), ("ellipse", (93, 24, 123, 58)))
# OpenPose-like keypoints (fractions of the figure box) and limbs, each limb in its own colour.
_KEYPOINTS = {
    "head": (0.5, 0.1), "neck": (0.5, 0.25), "r_shoulder": (0.28, 0.27), "l_shoulder": (0.72, 0.27),
    "r_elbow": (0.15, 0.45), "l_elbow": (0.85, 0.45), "r_wrist": (0.1, 0.62), "l_wrist": (0.9, 0.62),
    "r_hip": (0.38, 0.58), "l_hip": (0.62, 0.58), "r_knee": (0.35, 0.78), "l_knee": (0.65, 0.78),
    "r_ankle": (0.33, 0.97), "l_ankle": (0.67, 0.97),
}
_LIMBS = (
    ("neck", "head", (0, 0, 255)), ("neck", "r_shoulder", (255, 0, 0)), ("neck", "l_shoulder", (255, 85, 0)),
    ("r_shoulder", "r_elbow", (255, 170, 0)), ("r_elbow", "r_wrist", (255, 255, 0)),
    ("l_shoulder", "l_elbow", (170, 255, 0)), ("l_elbow", "l_wrist", (85, 255, 0)),
    ("neck", "r_hip", (0, 255, 0)), ("r_hip", "r_knee", (0, 255, 85)), ("r_knee", "r_ankle", (0, 255, 170)),
    ("neck", "l_hip", (0, 255, 255)), ("l_hip", "l_knee", (0, 170, 255)), ("l_knee", "l_ankle", (0, 85, 255)),
)


def pose_condition_image() -> Image.Image:
    """An OpenPose-style stick figure (coloured limbs, white joints) on black, in the man's box."""
    image = Image.new("RGB", CONDITION_SIZE, (0, 0, 0))
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = _FIGURE_BOX
    points = {name: (x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)) for name, (fx, fy) in _KEYPOINTS.items()}
    for start, end, colour in _LIMBS:
        draw.line([points[start], points[end]], fill=colour, width=3)
    for x, y in points.values():
        draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(255, 255, 255))
    return image


def sketch_condition_image() -> Image.Image:
    """White edge outlines of the dog's and the cat's shapes on black (grayscale), in their boxes."""
    image = Image.new("L", CONDITION_SIZE, 0)
    draw = ImageDraw.Draw(image)
    for shape, box in _SKETCH_OUTLINES:
        if shape == "ellipse":
            draw.ellipse(box, outline=255, width=2)
        else:
            draw.rectangle(box, outline=255, width=2)
    return image


def _write_conditions(folder: Path) -> None:
    for relative, image in ((POSE_CONDITION, pose_condition_image()), (SKETCH_CONDITION, sketch_condition_image())):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
