"""What the confused boxes of a scored toy run show: another concept's colour, or the concept's own colour drawn
in another concept's shape.

    python scripts/confusion_breakdown.py RUN [--methods lora-composer,lora-merge]

Reads the ``confusion`` scores that ``bench score`` wrote with the toy classifier (each row keeps the
classifier's reading, "blue striped circle") and the concepts' attributes from the run's ``spec.json``. A box
counts as confused when the reading has a shape or colour of another concept of its scene that its own concept
does not share (the toy judge's rule); this splits those boxes by which attribute it was.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

OTHER_COLOUR = "another concept's colour"
OWN_COLOUR = "own colour, another concept's shape"


def breakdown(run: Path, method: str) -> tuple[int, Counter[str]]:
    """The number of scored boxes of ``method`` and its confused boxes counted by kind."""
    attributes = {c["id"]: c.get("attributes", {}) for c in json.loads((run / "spec.json").read_text())["concepts"]}
    boxes, kinds = 0, Counter[str]()
    for path in sorted((run / "scores" / "confusion" / "items" / method).glob("*/*.json")):
        for row in json.loads(path.read_text())["rows"]:
            boxes += 1
            if row["value"] != 1.0:
                continue
            colour = row["predicted"].split()[0]
            kinds[OWN_COLOUR if colour == attributes[row["concept"]].get("colour") else OTHER_COLOUR] += 1
    return boxes, kinds


def main(argv: list[str] | None = None) -> int:
    """Print one line per method."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--methods", help="comma-separated (default: every scored method)")
    args = parser.parse_args(argv)
    root = args.run / "scores" / "confusion" / "items"
    methods = args.methods.split(",") if args.methods else sorted(p.name for p in root.iterdir())
    for method in methods:
        boxes, kinds = breakdown(args.run, method)
        confused = sum(kinds.values())
        parts = ", ".join(f"{kinds[k]} {k}" for k in (OTHER_COLOUR, OWN_COLOUR))
        print(f"{method}: {confused} of {boxes} boxes confused ({100 * confused / max(boxes, 1):.1f} %): {parts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
