"""Drawing a scene's region boxes on an image: the one function every grid and view uses.

Images are enlarged by an integer ``zoom`` with nearest-neighbour sampling (no smoothing: a 64-pixel image
stays a grid of sharp pixels), then each box is drawn with its concept's label *outside* the box: above
it, or below it, clamped to the image so nothing is cut. A label never covers the inside of any box; when
one does not fit, every label goes into a legend strip under the image instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from bench.boxes import to_xyxy_pixels
from bench.spec import Scene

BOX_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")
LABEL_BACKGROUND = "white"
PAD = 1

Rect = tuple[int, int, int, int]


def box_colour(index: int) -> str:
    """The colour of region ``index`` (cycling through :data:`BOX_COLOURS`)."""
    return BOX_COLOURS[index % len(BOX_COLOURS)]


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def zoomed(image: Image.Image, zoom: int) -> Image.Image:
    """``image`` (RGB) enlarged ``zoom`` times with nearest-neighbour sampling (``zoom`` 1: unchanged copy)."""
    rgb = image.convert("RGB")
    if zoom <= 1:
        return rgb.copy()
    return rgb.resize((rgb.width * zoom, rgb.height * zoom), Image.Resampling.NEAREST)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _interior(box: Rect, width: int) -> Rect:
    x0, y0, x1, y1 = box
    return (x0 + width, y0 + width, x1 - 1 - width, y1 - 1 - width)


def label_positions(
    boxes: Sequence[Rect], sizes: Sequence[tuple[int, int]], image_size: tuple[int, int], width: int
) -> list[Rect] | None:
    """Where each label goes (its rectangle, inclusive), above or below its box, clear of every box's
    inside, of the image border and of the labels placed before it; None when one does not fit."""
    w_img, h_img = image_size
    interiors = [_interior(b, width) for b in boxes]
    placed: list[Rect] = []
    for (x0, y0, _x1, y1), (w, h) in zip(boxes, sizes, strict=True):
        if w + 2 * PAD > w_img:
            return None
        left = max(0, min(x0, w_img - w - 2 * PAD))
        candidates = [(left, y0 - h - 2 * PAD - 1), (left, y1 + 1)]
        spot = None
        for x, y in candidates:
            rect = (x, y, x + w + 2 * PAD - 1, y + h + 2 * PAD - 1)
            if y < 0 or rect[3] >= h_img:
                continue
            if any(_overlaps(rect, inner) for inner in interiors) or any(_overlaps(rect, p) for p in placed):
                continue
            spot = rect
            break
        if spot is None:
            return None
        placed.append(spot)
    return placed


def draw_boxes(
    image: Image.Image,
    scene: Scene,
    *,
    width: int | None = None,
    labels: bool = True,
    zoom: int = 1,
    legend: str = "auto",
    names: Sequence[str] | None = None,
) -> Image.Image:
    """A copy of ``image``, enlarged ``zoom`` times (nearest neighbour), with the scene's region boxes and labels.

    ``width`` defaults to one pixel per 128 pixels of the enlarged image's shorter side. Labels (concept ids,
    or ``names``) sit outside their boxes; with ``legend="auto"`` they move into a legend strip under the
    image when one does not fit, ``"always"`` puts them there anyway.
    """
    if legend not in ("auto", "always"):
        raise ValueError(f"legend: expected 'auto' or 'always' (got {legend!r})")
    out = zoomed(image, zoom)
    draw = ImageDraw.Draw(out)
    width = width or max(1, round(min(out.size) / 128))
    boxes: list[Rect] = []
    for i, region in enumerate(scene.regions):
        x0, y0, x1, y1 = to_xyxy_pixels(region.box, out.width, out.height)
        boxes.append((x0, y0, max(x0 + 1, x1), max(y0 + 1, y1)))
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=box_colour(i), width=width)
    if not labels:
        return out
    texts = list(names) if names is not None else [r.concept for r in scene.regions]
    font = _font(max(10, min(16, out.height // 16)))
    sizes = []
    for text in texts:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        sizes.append((right - left, bottom - top))
    spots = label_positions(boxes, sizes, out.size, width) if legend == "auto" else None
    if spots is not None:
        for i, (rect, text) in enumerate(zip(spots, texts, strict=True)):
            draw.rectangle(rect, fill=LABEL_BACKGROUND)
            left, top, _, _ = draw.textbbox((0, 0), text, font=font)
            draw.text((rect[0] + PAD - left, rect[1] + PAD - top), text, fill=box_colour(i), font=font)
        return out
    return _with_legend(out, texts, font)


def _with_legend(image: Image.Image, texts: Sequence[str], font: ImageFont.ImageFont | ImageFont.FreeTypeFont
                 ) -> Image.Image:
    """``image`` with a white strip under it listing each region's colour and label, wrapped to the width."""
    probe = ImageDraw.Draw(image)
    line_h = max(probe.textbbox((0, 0), "Ag", font=font)[3], 8) + 4
    entries, x, y = [], 2, 0
    for i, text in enumerate(texts):
        w = probe.textbbox((0, 0), text, font=font)[2] + line_h + 6
        if x + w > image.width and x > 2:
            x, y = 2, y + line_h
        entries.append((i, text, x, y))
        x += w
    canvas = Image.new("RGB", (image.width, image.height + y + line_h), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, text, ex, ey in entries:
        top = image.height + ey + 2
        draw.rectangle((ex, top, ex + line_h - 5, top + line_h - 5), fill=box_colour(i))
        draw.text((ex + line_h - 1, top), text, fill="black", font=font)
    return canvas
