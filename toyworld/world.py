"""The toy world: coloured, textured shapes on plain or scenic backgrounds, with captions and boxes.

Everything is drawn with PIL at 4x resolution and box-filtered down to 64x64, from a numpy
``Generator``, so a seed gives the same image on every machine. Textures are coarse (period 8 px)
because the 4x VAE cannot keep finer ones. Each object keeps its box (the circumscribed square of
its radius, in pixels) and the caption words that name it, for the token-grounding loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
_SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 210, 40),
    "purple": (150, 50, 190),
}
TEXTURES = ("solid", "striped", "dotted")
TEXTURE_WEIGHTS = (0.5, 0.25, 0.25)
TEXTURE_PERIOD = 8  # pixels at 64x64; finer periods do not survive the 4x VAE

# Plain backgrounds are grey levels; scenes are drawn. Caption phrases as the captions use them.
PLAIN_BACKGROUNDS: dict[str, int] = {"white": 238, "gray": 128, "black": 25}
SCENES = ("beach", "night")
BACKGROUNDS = tuple(PLAIN_BACKGROUNDS) + SCENES


def background_phrase(background: str) -> str:
    """How a caption names a background: 'on a white background', 'on a beach', 'at night'."""
    if background in PLAIN_BACKGROUNDS:
        return f"on a {background} background"
    return {"beach": "on a beach", "night": "at night"}[background]


@dataclass(frozen=True)
class ToyObject:
    """One object: what it is and where (centre and radius in 64x64 pixels)."""

    shape: str
    colour: str
    texture: str
    cx: float
    cy: float
    radius: float
    angle: float = 0.0  # degrees; circles ignore it
    rgb: tuple[int, int, int] | None = None  # jittered colour; None draws the nominal one

    @property
    def box(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` in pixels, clipped to the canvas."""
        r = self.radius
        return (max(0.0, self.cx - r), max(0.0, self.cy - r), min(SIZE, self.cx + r), min(SIZE, self.cy + r))

    def words(self, shape_only: bool = False) -> list[str]:
        """The caption words naming the object, without the article: ['red', 'striped', 'circle'], or with
        ``shape_only`` the class word alone (['circle']), as a layout's global prompt names it."""
        if shape_only:
            return [self.shape]
        texture = [] if self.texture == "solid" else [self.texture]
        return [self.colour, *texture, self.shape]


@dataclass
class ToyImage:
    """A rendered image with its objects, background and caption."""

    image: Image.Image
    objects: list[ToyObject]
    background: str
    caption: str
    # caption word index -> object index, for the words that name an object
    word_objects: dict[int, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Drawing


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        scale = r / math.sqrt(2) * 1.05
    elif shape == "triangle":
        corners = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        scale = r
    elif shape == "cross":
        w = 0.36
        corners = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
                   (-1, -w), (-w, -w)]
        scale = r
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    return [(cx + scale * (x * c - y * s), cy + scale * (x * s + y * c)) for x, y in corners]


def draw_background(background: str) -> Image.Image:
    """The empty canvas of a background, at 4x resolution."""
    side = SIZE * _SUPERSAMPLE
    if background in PLAIN_BACKGROUNDS:
        level = PLAIN_BACKGROUNDS[background]
        return Image.new("RGB", (side, side), (level, level, level))
    canvas = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(canvas)
    if background == "beach":
        horizon = int(side * 0.45)
        draw.rectangle([0, 0, side, horizon], fill=(140, 195, 240))
        draw.rectangle([0, horizon, side, side], fill=(225, 200, 150))
    elif background == "night":
        horizon = int(side * 0.75)
        draw.rectangle([0, 0, side, horizon], fill=(18, 22, 58))
        draw.rectangle([0, horizon, side, side], fill=(25, 55, 40))
    else:
        raise ValueError(f"unknown background {background!r}; expected one of {BACKGROUNDS}")
    return canvas


def _texture_mark(background: str) -> tuple[int, int, int]:
    """Stripes and dots are white, or dark where white would not stand out."""
    return (30, 30, 30) if background in ("white", "beach") else (245, 245, 245)


def draw_object(canvas: Image.Image, obj: ToyObject, background: str) -> None:
    """Draw ``obj`` onto a 4x canvas."""
    k = _SUPERSAMPLE
    side = SIZE * k
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = obj.cx * k, obj.cy * k, obj.radius * k
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r, obj.angle), fill=255)
    fill = Image.new("RGB", (side, side), obj.rgb or COLOURS[obj.colour])
    if obj.texture != "solid":
        pattern = Image.new("L", (side, side), 0)
        marks = ImageDraw.Draw(pattern)
        period = TEXTURE_PERIOD * k
        if obj.texture == "striped":
            for y in range(int(cy - r) - period, int(cy + r) + period, period):
                marks.rectangle([0, y, side, y + period // 2 - 1], fill=255)
        else:
            dot = period * 0.28
            for y in np.arange(cy - period * 4, cy + period * 4, period):
                for x in np.arange(cx - period * 4, cx + period * 4, period):
                    marks.ellipse([x - dot, y - dot, x + dot, y + dot], fill=255)
        fill.paste(Image.new("RGB", (side, side), _texture_mark(background)), (0, 0), pattern)
    canvas.paste(fill, (0, 0), mask)


def render(objects: list[ToyObject], background: str) -> Image.Image:
    """The 64x64 image of ``objects`` on ``background``."""
    canvas = draw_background(background)
    for obj in objects:
        draw_object(canvas, obj, background)
    return canvas.resize((SIZE, SIZE), Image.Resampling.BOX)


# ----------------------------------------------------------------------------------------------
# Sampling scenes and captions


def jittered_colour(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """The nominal RGB of ``colour`` with the world's per-object jitter (sigma 8)."""
    base = np.array(COLOURS[colour], dtype=float)
    return tuple(int(v) for v in np.clip(base + rng.normal(0, 8, 3), 0, 255))  # type: ignore[return-value]


@dataclass(frozen=True)
class Poses:
    """How random scenes size and turn their objects (radii in pixels, rotation in degrees either way)."""

    max_rotation: float = 20.0
    min_radius: float = 8.0
    max_radius_single: float = 19.0
    max_radius_multi: float = 12.5


# Every pose and size: what the VAE, the box classifier and the CLIP learn to read.
VARIED = Poses()
# Upright objects, none smaller than 9 px in radius: the world the generator learns and the concepts live in.
UPRIGHT = Poses(max_rotation=0.0, min_radius=9.0, max_radius_multi=14.0)


def place_objects(rng: np.random.Generator, count: int, poses: Poses) -> list[tuple[float, float, float]]:
    """Non-overlapping ``(cx, cy, radius)`` for ``count`` objects (rejection sampling)."""
    max_radius = poses.max_radius_single if count == 1 else poses.max_radius_multi
    while True:
        placed: list[tuple[float, float, float]] = []
        for _ in range(count):
            for _attempt in range(50):
                r = rng.uniform(poses.min_radius, max_radius)
                cx, cy = rng.uniform(r, SIZE - r), rng.uniform(r, SIZE - r)
                if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                    placed.append((cx, cy, r))
                    break
        if len(placed) == count:
            return placed


def random_object(rng: np.random.Generator, cx: float, cy: float, r: float, max_rotation: float = 20.0
                  ) -> ToyObject:
    """An object of random kind at a given place."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    texture = TEXTURES[rng.choice(len(TEXTURES), p=TEXTURE_WEIGHTS)]
    angle = float(rng.uniform(-max_rotation, max_rotation))
    return ToyObject(shape, colour, texture, cx, cy, r, angle, jittered_colour(rng, colour))


def sample_background(rng: np.random.Generator) -> tuple[str, bool]:
    """A random background and whether the caption names it (half the plain ones, nine in ten scenes)."""
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return background, bool(rng.random() < (0.5 if background in PLAIN_BACKGROUNDS else 0.9))


def caption_words(objects: list[ToyObject], order: list[int], background: str | None, shape_only: bool = False
                  ) -> tuple[list[str], dict]:
    """Caption words ('a red circle and a blue square on a beach', or with ``shape_only`` 'a circle and a
    square on a beach') and word index -> object index."""
    words: list[str] = []
    owner: dict[int, int] = {}
    for n, index in enumerate(order):
        if n and n == len(order) - 1:
            words.append("and")
        words.append("a")
        for word in objects[index].words(shape_only):
            owner[len(words)] = index
            words.append(word)
        if len(order) > 2 and n < len(order) - 2:
            words[-1] += ","
    if background is not None:
        words.extend(background_phrase(background).split())
    return words, owner


# How many objects a training image holds: count -> probability, per most objects allowed.
OBJECT_COUNTS = {3: {1: 0.4, 2: 0.35, 3: 0.25}, 4: {1: 0.3, 2: 0.3, 3: 0.2, 4: 0.2}}
MAX_OBJECTS = 3  # the committed world's


def sample_image(rng: np.random.Generator, poses: Poses = VARIED, shape_only_share: float = 0.0,
                 max_objects: int = MAX_OBJECTS) -> ToyImage:
    """One random training image: 1 to ``max_objects`` objects (a key of :data:`OBJECT_COUNTS`), a background,
    a caption in random object order.

    A ``shape_only_share`` of the captions name every object by its shape alone ('a circle and a square on
    a beach'). At 0 no extra random number is drawn, so a seed gives the images it gives without the option.
    """
    if max_objects not in OBJECT_COUNTS:
        raise ValueError(f"max_objects: expected one of {sorted(OBJECT_COUNTS)}, got {max_objects!r}")
    counts = OBJECT_COUNTS[max_objects]
    count = int(rng.choice(list(counts), p=list(counts.values())))
    objects = [random_object(rng, cx, cy, r, poses.max_rotation) for cx, cy, r in place_objects(rng, count, poses)]
    background, named = sample_background(rng)
    order = [int(i) for i in rng.permutation(count)]
    shape_only = bool(shape_only_share) and rng.random() < shape_only_share
    words, owner = caption_words(objects, order, background if named else None, shape_only)
    return ToyImage(render(objects, background), objects, background, " ".join(words), owner)
