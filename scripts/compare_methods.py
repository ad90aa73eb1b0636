"""Is one method ahead of another by more than the seed noise? The calibration check's rule, between two methods.

    python scripts/compare_methods.py RUN [RUN...] --a lora-composer --b lora-merge --metrics clip_i,vanishing

For each metric: each method's per-seed means over scenes (a seed: a (run, seed index) pair, as the calibration
check takes them, :func:`reports.calibration.seed_means`), their means and standard deviations (ddof=1), the
direction-aware gap (positive when ``a`` is better) and ``k`` times the larger deviation that the gap must reach.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reports.calibration import seed_means
from reports.load import load_scores


def main(argv: list[str] | None = None) -> int:
    """Print one line per metric; exit 1 when ``a`` is not ahead of ``b`` on every metric by ``k`` seed std."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--a", required=True, help="the method expected ahead")
    parser.add_argument("--b", required=True, help="the method it is compared with")
    parser.add_argument("--metrics", default="clip_i,vanishing")
    parser.add_argument("--k", type=float, default=3.0)
    args = parser.parse_args(argv)
    frame = load_scores(args.runs)
    infos = frame.attrs["metrics"]
    ahead = True
    for metric in args.metrics.split(","):
        if metric not in infos:
            parser.error(f"--metrics: '{metric}' is not scored in {[str(r) for r in args.runs]}; "
                         f"expected one of {sorted(infos)}")
        info = infos[metric]
        a, b = seed_means(frame, metric, args.a) * info.scale, seed_means(frame, metric, args.b) * info.scale
        gap = (a.mean() - b.mean()) * (1 if info.higher_is_better else -1)
        need = args.k * max(a.std(ddof=1), b.std(ddof=1))
        passed = bool(gap > 0 and gap >= need)
        ahead &= passed
        print(f"{metric} ({'higher' if info.higher_is_better else 'lower'} is better): {args.a} {a.mean():.4g} "
              f"(seed std {a.std(ddof=1):.3g}, {len(a)} seeds), {args.b} {b.mean():.4g} (seed std "
              f"{b.std(ddof=1):.3g}); gap {gap:.3g}, needs {need:.3g} ({args.k:g} seed std): "
              f"{'ahead' if passed else 'NOT ahead'}")
    return 0 if ahead else 1


if __name__ == "__main__":
    raise SystemExit(main())
