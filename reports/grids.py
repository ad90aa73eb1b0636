"""Image grids: scenes x methods for one seed index, with each region's box drawn on the image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from bench.store import RunStore
from reports.boxes import draw_boxes

LABEL_H = 16


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
    label_w = 96
    grid = Image.new("RGB", (label_w + cell_w * len(methods), LABEL_H + cell_height * len(scenes)), "white")
    draw = ImageDraw.Draw(grid)
    for col, method in enumerate(methods):
        draw.text((label_w + col * cell_w + 4, 2), method[: cell_w // 6], fill="black")
    for row, scene_id in enumerate(scenes):
        top = LABEL_H + row * cell_height
        draw.text((4, top + cell_height // 2), scene_id[:16], fill="black")
        scene = spec.scenes[scene_id]
        for col, method in enumerate(methods):
            left = label_w + col * cell_w
            record = records.get((method, scene_id))
            if record is None or record.image is None:
                draw.rectangle(
                    (left, top, left + widths[scene_id] - 1, top + cell_height - 1), fill="#cccccc"
                )
                continue
            with Image.open(record.image) as image:
                tile = image.convert("RGB").resize((widths[scene_id], cell_height), Image.Resampling.BICUBIC)
            if boxes:
                tile = draw_boxes(tile, scene, width=2, labels=False)
            grid.paste(tile, (left, top))
    return grid
