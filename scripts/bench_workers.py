"""`bench run --workers N` against one process, on the same methods, scenes and seeds.

    python scripts/bench_workers.py --methods lora-merge,lora-composer,lora-regional --seeds 2 --workers 2

Runs `bench run` twice into fresh temporary folders, from a fresh process each time (so both pay the same
start-up): once as a single process with the machine's default thread count, once with ``--workers N``. It
prints the wall time of each, their ratio, how many images each run generated and which ranks made them
(read from the records: the work was done, and split), and the largest pixel difference between the two
runs' images (float summation order differs with the thread count, so a grey level or two is expected).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def timed_run(out: Path, methods: str, dataset: str, seeds: int, workers: str) -> float:
    """Wall seconds of one `bench run` into ``out``."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS")}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lcbench", "--quiet", "run", "--methods", methods, "--dataset", dataset, "--seeds",
         str(seeds), "--out", str(out), "--workers", workers],
        cwd=REPO, env={**env, "HF_HUB_OFFLINE": "1"}, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - started


def made(run: Path) -> tuple[int, Counter[int]]:
    """(images generated, images per rank) from the run's records."""
    records = [json.loads(p.read_text()) for p in run.glob("items/*/*/*.json")]
    ok = [r for r in records if r.get("status") == "ok"]
    return len(ok), Counter(int(r.get("rank", 0)) for r in ok)


def largest_difference(a: Path, b: Path) -> int:
    """The largest pixel difference between the two runs' images of the same items."""
    worst = 0
    for png in a.glob("items/*/*/*.png"):
        other = b / png.relative_to(a)
        x = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
        y = np.asarray(Image.open(other).convert("RGB"), dtype=np.int16)
        worst = max(worst, int(np.abs(x - y).max()))
    return worst


def main() -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="lora-merge,lora-composer,lora-regional")
    parser.add_argument("--dataset", default="toy")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        t_one = timed_run(one, args.methods, args.dataset, args.seeds, "1")
        t_many = timed_run(many, args.methods, args.dataset, args.seeds, args.workers)
        n_one, ranks_one = made(one)
        n_many, ranks_many = made(many)
        print(f"one process: {t_one:.1f} s, {n_one} images (ranks {dict(ranks_one)})")
        print(f"--workers {args.workers}: {t_many:.1f} s, {n_many} images (ranks {dict(sorted(ranks_many.items()))})")
        print(f"speed-up {t_one / t_many:.2f}x; largest pixel difference {largest_difference(one, many)}")
        if n_one != n_many or n_one == 0:
            print("the two runs did not generate the same number of images", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
