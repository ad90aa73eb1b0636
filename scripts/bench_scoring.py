"""Scoring throughput: images per second and the share of time spent outside the model.

Builds a synthetic run (one scene, two boxes plus a background concept, 512 x 512 PNGs), warms the
reference-embedding cache, then times ``metrics.score_run`` for CLIP-I and CLIP-T. "Model" time is
the time inside ``encode_image`` / ``encode_text``; everything else (PNG decoding, cropping,
preprocessing, JSON I/O) is "outside". Model loading is excluded.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_scoring.py --images 32 --models tiny vitb32
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.spec import load_spec
from bench.store import ItemKey, RunStore
from metrics.models import RANDOM_CLIP, ClipEmbedder
from metrics.scoring import score_run

SPEC = """
name: bench-scoring
concepts:
  - {id: catA, class_name: cat, style: real, tokens: "<catA1> <catA2>", lora: a.pt, references: refs/catA}
  - {id: dogB, class_name: dog, style: real, tokens: "<dogB1> <dogB2>", lora: b.pt, references: refs/dogB}
  - {id: park, class_name: park, style: real, tokens: "<park1> <park2>", lora: c.pt, references: refs/park,
     background: true}
scenes:
  - id: s1
    prompt: "a cat and a dog in <park1> <park2>, best quality"
    width: {size}
    height: {size}
    regions:
      - {concept: catA, box: [0.0, 0.1, 0.45, 1.0], prompt: "<catA1> <catA2> sitting, detailed fur"}
      - {concept: dogB, box: [0.5, 0.2, 1.0, 1.0], prompt: "<dogB1> <dogB2> running, detailed"}
"""
MODELS = {
    "tiny": (RANDOM_CLIP, "tiny CLIP (random, 64 px)"),
    "vitb32": ("ViT-B-32-quickgelu", "ViT-B-32 random"),
}


class References:
    """Reference files under ``root/refs/<concept>``."""

    def __init__(self, root: Path):
        self.root = root

    def reference_images(self, concept_id: str) -> list[Path]:
        """All PNGs of the concept."""
        return sorted((self.root / "refs" / concept_id).glob("*.png"))

    def mask_images(self, concept_id: str) -> list[Path]:
        """No masks."""
        return []


def build_run(root: Path, images: int, size: int) -> Path:
    """A spec with 3 concepts x 4 references and a run with ``images`` PNGs of one scene."""
    rng = np.random.default_rng(0)
    (root / "spec.yaml").write_text(SPEC.replace("{size}", str(size)))
    for concept in ("catA", "dogB", "park"):
        (root / "refs" / concept).mkdir(parents=True)
        for j in range(4):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "refs" / concept / f"{j}.png")
    spec = load_spec(root / "spec.yaml")
    store = RunStore(root / "run")
    store.write_manifest(
        {"dataset": {"name": spec.name, "path": str(root / "spec.yaml"), "spec_hash": spec.spec_hash()},
         "methods": {"m": {"name": "m", "params": {}, "description": ""}}}
    )  # fmt: skip
    for index in range(images):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        store.write_item(ItemKey("m", "s1", index), index, Image.fromarray(pixels), {"status": "ok"})
    return store.root


def _timed(counter: dict[str, float], fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            counter["model"] += time.perf_counter() - start

    return wrapper


def measure(run: Path, refs: References, model: str, batch_size: int) -> dict[str, float]:
    """Score ``run`` once with a warm reference cache; return wall, model and load seconds."""
    counter = {"model": 0.0, "load": 0.0}
    original_init = ClipEmbedder.__init__

    def init(self: ClipEmbedder, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        if not model.startswith("builtin:"):
            kwargs["random_init"] = True  # an architecture's cost does not depend on its weights
        original_init(self, *args, **kwargs)
        counter["load"] += time.perf_counter() - start
        self.model.encode_image = _timed(counter, self.model.encode_image)
        self.model.encode_text = _timed(counter, self.model.encode_text)

    ClipEmbedder.__init__ = init  # type: ignore[method-assign]
    try:
        shutil.rmtree(run / "scores", ignore_errors=True)
        cache = run.parent / "refcache"
        score_run(run, ["clip_i", "clip_t"], clip_model=model, references=refs, cache_dir=cache, quiet=True,
                  batch_size=batch_size)  # fmt: skip
        shutil.rmtree(run / "scores")
        counter.update(model=0.0, load=0.0)
        start = time.perf_counter()
        score_run(run, ["clip_i", "clip_t"], clip_model=model, references=refs, cache_dir=cache, quiet=True,
                  batch_size=batch_size)  # fmt: skip
        counter["wall"] = time.perf_counter() - start - counter["load"]
    finally:
        ClipEmbedder.__init__ = original_init  # type: ignore[method-assign]
    return counter


def main() -> None:
    """Print one line per model: images/s, and the share of time outside the model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "vitb32"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}; {args.images} images {args.size}x{args.size}, 3 targets each, "
          f"CLIP-I + CLIP-T (2 passes), batch {args.batch_size}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(Path(tmp), args.images, args.size)
        refs = References(Path(tmp))
        for key in args.models:
            model, label = MODELS[key]
            t = measure(run, refs, model, args.batch_size)
            outside = t["wall"] - t["model"]
            rate, share = args.images / t["wall"], 100 * outside / t["wall"]
            print(f"{label:28s} {rate:7.1f} images/s (both metrics)  wall {t['wall']:6.2f} s  "
                  f"model {t['model']:6.2f} s  outside {outside:5.2f} s = {share:4.1f} %")  # fmt: skip


if __name__ == "__main__":
    main()
