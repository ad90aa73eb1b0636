"""Would a method do better if its boxes kept cells on the coarse attention grids? A run with boxes rounded there.

    python scripts/diagnose_box_grids.py --method lora-composer --out runs/rounded4 --round-up-to 4 \
        [--dataset toy] [--benchmark default] [--metrics vanishing,confusion,clip_i]

LoRA-Composer quantises a box to an attention grid as upstream does (ceil starts, floor ends,
:func:`bench.boxes.box_to_grid`), so on a coarse grid a box narrower than two cells can come out empty and the
grid then reads the global prompt over the whole image (the toy UNet's 4x4 mid block, for every toy box). This
diagnosis runs the method in this process with the concept region masks and region injection of every grid at
most ``--round-up-to`` cells high quantised by rounding instead (``round(y0 * h)`` to ``round(y1 * h)``), finer
grids as upstream, then scores the run with ``--no-calibrate``. It changes no default: the patch lives only here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.boxes import Box, box_to_grid
from reports.aggregate import image_scores
from reports.load import load_scores


def rounded_below(limit: int) -> Callable[[Box, int, int], tuple[int, int, int, int]]:
    """``box_to_grid`` that rounds both edges on grids at most ``limit`` cells high, and is upstream's above."""

    def rounded_box_to_grid(box: Box, grid_h: int, grid_w: int) -> tuple[int, int, int, int]:
        if grid_h > limit:
            return box_to_grid(box, grid_h, grid_w)
        x0, y0, x1, y1 = box
        return (round(y0 * grid_h), round(y1 * grid_h), round(x0 * grid_w), round(x1 * grid_w))

    return rounded_box_to_grid


@contextmanager
def rounded_boxes(limit: int) -> Iterator[None]:
    """Within the block, the attention geometry quantises boxes with :func:`rounded_below`."""
    import regions.geometry as geometry

    original = geometry.box_to_grid
    geometry.box_to_grid = rounded_below(limit)
    try:
        yield
    finally:
        geometry.box_to_grid = original


def main(argv: list[str] | None = None) -> int:
    """Run and score the method with rounded boxes; print each metric's image mean."""
    from lcbench.cli import main as bench_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--round-up-to", type=int, required=True, help="grids at most this many cells high round")
    parser.add_argument("--dataset", default="toy")
    parser.add_argument("--benchmark", default="default")
    parser.add_argument("--metrics", default="vanishing,confusion,clip_i")
    args = parser.parse_args(argv)
    with rounded_boxes(args.round_up_to):  # one process: workers would not see the patch
        if bench_main(["run", "--methods", args.method, "--dataset", args.dataset, "--benchmark", args.benchmark,
                       "--out", str(args.out), "--workers", "1"]) != 0:
            return 1
    if bench_main(["score", str(args.out), "--metrics", args.metrics, "--no-calibrate"]) != 0:
        return 1
    scores = load_scores([args.out])
    for metric in args.metrics.split(","):
        images = image_scores(scores[scores["method"] == args.method], metric)
        print(f"{metric}: image mean {images['value'].mean():.4f} over {len(images)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
