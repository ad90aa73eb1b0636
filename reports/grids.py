"""Image grids: scenes x methods for one seed index, with each region's box drawn on the image.

Tiles are enlarged with nearest-neighbour sampling (never smoothed); each row's label lists the scene and
its concepts in their box colours, so the boxes need no label on the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from bench.store import RunStore
from reports.boxes import box_colour, draw_boxes

LABEL_H = 28
LABEL_W = 96
LINE = 12


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    """``text`` split into at most two lines of at most ``width`` pixels (the second cut with '…')."""
    lines, current = [], ""
    for ch in text:
        if draw.textlength(current + ch) > width and current:
            lines.append(current)
            current = ""
        current += ch
    lines.append(current)
    if len(lines) > 2:
        lines = [lines[0], lines[1][:-1] + "…"]
    return lines


def image_grid(
    run_dir: str | Path,
    scenes: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    index: int = 0,
    cell_height: int = 128,
    boxes: bool = True,
) -> Image.Image:
    """A grid with one row per scene and one column per method (store keys); missing images stay grey."""
    store = RunStore(run_dir)
    manifest = store.read_manifest()
    spec = store.read_spec()
    records = {(r.key.method, r.key.scene): r for r in store.records() if r.key.index == index}
    methods = list(methods or sorted(manifest.get("methods") or {r.key.method for r in store.records()}))
    scenes = list(scenes or [s for s in manifest.get("scenes", spec.scenes) if s in spec.scenes])
    widths = {s: round(cell_height * spec.scenes[s].width / spec.scenes[s].height) for s in scenes}
    cell_w = max(widths.values(), default=cell_height)
    grid = Image.new("RGB", (LABEL_W + cell_w * len(methods), LABEL_H + cell_height * len(scenes)), "white")
    draw = ImageDraw.Draw(grid)
    for col, method in enumerate(methods):
        for i, line in enumerate(_fit(draw, method, cell_w - 6)):
            draw.text((LABEL_W + col * cell_w + 3, 2 + i * LINE), line, fill="black")
    for row, scene_id in enumerate(scenes):
        top = LABEL_H + row * cell_height
        scene = spec.scenes[scene_id]
        draw.text((4, top + 4), _fit(draw, scene_id, LABEL_W - 8)[0], fill="black")
        for i, region in enumerate(scene.regions):
            if 4 + (i + 1) * LINE + LINE <= cell_height:
                draw.text((10, top + 4 + (i + 1) * LINE), region.concept[:14], fill=box_colour(i))
        for col, method in enumerate(methods):
            left = LABEL_W + col * cell_w
            record = records.get((method, scene_id))
            if record is None or record.image is None:
                draw.rectangle((left, top, left + widths[scene_id] - 1, top + cell_height - 1), fill="#cccccc")
                continue
            with Image.open(record.image) as image:
                tile = image.convert("RGB").resize((widths[scene_id], cell_height), Image.Resampling.NEAREST)
            if boxes:
                tile = draw_boxes(tile, scene, width=2, labels=False)
            grid.paste(tile, (left, top))
    return grid
