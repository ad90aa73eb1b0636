"""Measure how far a box judge agrees with the toy classifier on the toy world's oracle renders.

    python scripts/validate_judges.py [--judge identity=clip,min_similarity=0.35] [--seeds 4] [--out FILE.md]

The candidate (default: CLIP similarity with the toy CLIP, ``min_similarity`` 0.35, see the README) is
compared box by box with the toy classifier (``builtin:toy-classifier``) on perfect, swapped and blank
renders of every toy scene (:mod:`metrics.judges.validation`). Prints the agreement per condition and
the boxes where the judges disagree; ``--out`` also writes the table as Markdown.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.assets import AssetResolver
from bench.catalog import load_dataset
from bench.models import create
from metrics.context import ScoreContext
from metrics.judges.spec import build_judge
from metrics.judges.validation import validate_judge

DEFAULT_JUDGE = "identity=clip,min_similarity=0.35"


def main(argv: list[str] | None = None) -> int:
    """Run the validation and print it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", default=DEFAULT_JUDGE, help=f"the candidate judge (default: {DEFAULT_JUDGE})")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = load_dataset("toy")
    references = AssetResolver(spec, None)
    ctx = ScoreContext(spec, references)  # the toy CLIP of the spec's evaluation section
    start = time.perf_counter()
    result = validate_judge(spec, references, ctx.dataset_judge(), build_judge(args.judge, ctx),
                            create(spec.evaluation.oracle or "builtin:toy-render", "oracle"), seeds=range(args.seeds))
    text = result.markdown()
    print(text)
    print(f"\n{len(result.rows)} boxes in {time.perf_counter() - start:.1f} s")
    for row in result.rows:
        if not row.agree:
            print(f"disagree: {row.condition} {row.scene} seed {row.seed} region {row.region} ({row.concept}, "
                  f"shows {row.shown}): classifier {row.reference} '{row.reference_reading}' vs candidate "
                  f"{row.candidate} '{row.candidate_reading}'")
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
