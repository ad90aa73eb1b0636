"""Compare two run folders item by item: same images (decoded pixels) and same scores.

Used to show that a change of code layout changed no result: run the same benchmark (methods,
scenes, seeds) before and after, score both, then

    python scripts/compare_runs.py RUN_BEFORE RUN_AFTER [--atol 0]

It prints, per method, how many images are pixel-identical and the largest pixel and score
differences, and exits 1 when any image or score differs by more than ``--atol`` (or an item is
missing on one side).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _items(run: Path) -> dict[str, Path]:
    """Item path (``method/scene/index``) -> PNG, for every finished image."""
    return {str(p.relative_to(run / "items").with_suffix("")): p for p in sorted((run / "items").glob("*/*/*.png"))}


def _scores(run: Path) -> dict[tuple[str, str], list[float]]:
    """(metric key, item path) -> row values."""
    found = {}
    for path in sorted((run / "scores").glob("*/items/*/*/*.json")):
        metric = path.relative_to(run / "scores").parts[0]
        item = str(path.relative_to(run / "scores" / metric / "items").with_suffix(""))
        found[(metric, item)] = [row["value"] for row in json.loads(path.read_text())["rows"]]
    return found


def compare(before: Path, after: Path, atol: float) -> bool:
    """Print the comparison; True when everything matches within ``atol``."""
    a, b = _items(before), _items(after)
    ok = set(a) == set(b)
    if not ok:
        print(f"items only before: {sorted(set(a) - set(b))[:5]}; only after: {sorted(set(b) - set(a))[:5]}")
    per_method: dict[str, list[float]] = defaultdict(list)
    for item in sorted(set(a) & set(b)):
        x = np.asarray(Image.open(a[item]).convert("RGB"), dtype=np.int16)
        y = np.asarray(Image.open(b[item]).convert("RGB"), dtype=np.int16)
        per_method[item.split("/")[0]].append(float(np.abs(x - y).max()) if x.shape == y.shape else float("inf"))
    for method, diffs in sorted(per_method.items()):
        same = sum(d == 0 for d in diffs)
        print(f"{method:28s} images identical {same}/{len(diffs)}, largest pixel difference {max(diffs):g}")
        ok &= max(diffs) <= atol * 255
    sa, sb = _scores(before), _scores(after)
    if sa or sb:
        common = set(sa) & set(sb)
        worst = max((abs(x - y) for key in common for x, y in zip(sa[key], sb[key], strict=True)), default=0.0)
        print(f"scores: {len(common)} item files in both ({len(sa)} before, {len(sb)} after), "
              f"largest difference {worst:.3g}")
        ok &= set(sa) == set(sb) and worst <= atol
    return ok


def main() -> None:
    """Parse arguments and compare."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--atol", type=float, default=0.0, help="tolerated difference (scores; images x255)")
    args = parser.parse_args()
    same = compare(args.before, args.after, args.atol)
    print("same results" if same else "RESULTS DIFFER")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
