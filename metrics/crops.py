"""What part of an image a similarity metric sees: box crops in three modes, and reference views.

Modes (anchors.md §1.2):

- ``center_crop``: the official one. The box is cut out as is; the model's transform then resizes the
  short side and center-crops a square, so a tall box loses its top and bottom.
- ``pad_square``: the box is cut out and padded to a square with white (AnyDoor's ``pad_to_square``),
  so the whole box survives the model's center crop.
- ``mask_grey``: GenEval's view. Padding is grey #999999, and a reference image with a mask has
  everything outside the mask painted grey and is cropped to the mask's bounding box.
"""

from __future__ import annotations

from PIL import Image

from bench.boxes import Box, to_xyxy_pixels

CROP_MODES = ("center_crop", "pad_square", "mask_grey")
WHITE = (255, 255, 255)
GREY = (153, 153, 153)


def check_crop_mode(mode: str) -> str:
    """Return ``mode`` or raise ValueError naming the allowed modes."""
    if mode not in CROP_MODES:
        raise ValueError(f"crop_mode: expected one of {list(CROP_MODES)} (got {mode!r})")
    return mode


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Center ``image`` on a square canvas of its longer side, filled with ``fill``."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _finish(image: Image.Image, mode: str) -> Image.Image:
    if mode == "pad_square":
        return pad_to_square(image, WHITE)
    if mode == "mask_grey":
        return pad_to_square(image, GREY)
    return image


def crop_box(image: Image.Image, box: Box | None, mode: str) -> Image.Image:
    """The view of ``box`` (canonical normalized xyxy; None = whole image) that the model gets."""
    check_crop_mode(mode)
    image = image.convert("RGB")
    if box is not None:
        image = image.crop(to_xyxy_pixels(box, *image.size))
    return _finish(image, mode)


def reference_view(image: Image.Image, mask: Image.Image | None, mode: str) -> Image.Image:
    """A reference image as the model sees it; ``mask_grey`` with a mask: the masked object on grey."""
    check_crop_mode(mode)
    image = image.convert("RGB")
    if mode == "mask_grey" and mask is not None:
        alpha = mask.convert("L").resize(image.size, Image.Resampling.NEAREST).point(lambda v: 255 if v > 127 else 0)
        image = Image.composite(image, Image.new("RGB", image.size, GREY), alpha)
        bbox = alpha.getbbox()
        if bbox is not None:
            image = image.crop(bbox)
    return _finish(image, mode)
