"""Drawing a scene's region boxes on an image: the one function every grid and view uses."""

from __future__ import annotations

from PIL import Image, ImageDraw

from bench.boxes import to_xyxy_pixels
from bench.spec import Scene

BOX_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")


def box_colour(index: int) -> str:
    """The colour of region ``index`` (cycling through :data:`BOX_COLOURS`)."""
    return BOX_COLOURS[index % len(BOX_COLOURS)]


def draw_boxes(image: Image.Image, scene: Scene, *, width: int | None = None, labels: bool = True) -> Image.Image:
    """A copy of ``image`` with the scene's region boxes (and, with ``labels``, their concept ids) drawn on it.

    ``width`` defaults to one pixel per 128 pixels of the image's shorter side.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = width or max(1, round(min(out.size) / 128))
    for i, region in enumerate(scene.regions):
        colour = box_colour(i)
        x0, y0, x1, y1 = to_xyxy_pixels(region.box, out.width, out.height)
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=width)
        if labels:
            draw.text((x0 + width + 1, y0 + width), region.concept, fill=colour)
    return out
