"""A tiny run folder for the metric and report tests: a spec, reference images and a few PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from bench.resolved import resolved_document
from bench.spec import load_spec
from bench.store import ItemKey, RunStore

SPEC = """
name: mini
concepts:
  - {id: catA, class_name: cat, style: real, tokens: "<catA1> <catA2>", lora: a.pt, references: refs/catA}
  - {id: dogB, class_name: dog, style: anime, tokens: "<dogB1> <dogB2>", lora: b.pt, references: refs/dogB}
  - {id: park, class_name: park, style: real, tokens: "<park1> <park2>", lora: c.pt, references: refs/park,
     background: true}
scenes:
  - id: real1
    prompt: "a cat and a dog in <park1> <park2>"
    width: 128
    height: 64
    regions:
      - {concept: catA, box: [0, 0, 0.5, 1], prompt: "<catA1> <catA2> sitting"}
      - {concept: dogB, box: [0.5, 0.25, 1, 1], prompt: "a <dogB1>  <dogB2> running"}
  - id: anime1
    prompt: "a dog"
    style: anime
    width: 64
    height: 64
    regions:
      - {concept: dogB, box: [0.25, 0, 0.75, 1], prompt: "<dogB1> <dogB2> jumping"}
benchmarks: [{id: mini, scenes: all, seeds: 2}]
"""


class FolderReferences:
    """References as files in ``root/refs/<concept>``, returned in reverse name order on purpose."""

    def __init__(self, root: Path):
        self.root = root

    def reference_images(self, concept_id: str) -> list[Path]:
        """Reference files, deliberately not sorted."""
        return sorted((self.root / "refs" / concept_id).glob("*.png"), reverse=True)

    def mask_images(self, concept_id: str) -> list[Path]:
        """Masks with the reference's stem, if any."""
        return sorted((self.root / "masks" / concept_id).glob("*.png"))


TINTS = {"a": (220, 200, 100), "b": (240, 90, 90), "c": (100, 220, 220)}


def noise_image(seed: int, size: tuple[int, int], tint: tuple[int, int, int] | None = None) -> Image.Image:
    """A deterministic random RGB image, optionally mostly one colour (70 % tint, 30 % noise)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3)).astype(np.float64)
    if tint is not None:
        pixels = 0.3 * pixels + 0.7 * np.array(tint, dtype=np.float64)
    return Image.fromarray(pixels.astype(np.uint8))


def make_run(root: Path, methods: tuple[str, ...] = ("m1", "m2"), seeds: int = 2) -> Path:
    """Write a spec, references and a run folder with one image per (method, scene, seed)."""
    spec_path = root / "mini.yaml"
    spec_path.write_text(SPEC)
    for i, concept in enumerate(("catA", "dogB", "park")):
        folder = root / "refs" / concept
        folder.mkdir(parents=True)
        for j, name in enumerate(("b", "a", "c")):
            noise_image(100 * i + j, (48, 64), TINTS[name]).save(folder / f"{name}.png")
    spec = load_spec(spec_path)
    run = root / "run"
    store = RunStore(run)
    store.write_spec(resolved_document(spec, root))
    store.write_manifest(
        {
            "dataset": {
                "name": spec.name,
                "path": str(spec_path),
                "spec_hash": spec.spec_hash(),
                "asset_root": str(root),
            },
            "methods": {m: {"name": m, "params": {}, "description": m} for m in methods},
            "scenes": list(spec.scenes),
            "seeds": seeds,
        }
    )
    for k, method in enumerate(methods):
        for scene in spec.scenes.values():
            for index in range(seeds):
                image = noise_image(
                    1000 * k + 10 * index + len(scene.id), (scene.width, scene.height), (200, 150, 90)
                )
                store.write_item(ItemKey(method, scene.id, index), 7 + index, image, {"status": "ok"})
    store.write_item(ItemKey(methods[0], "real1", seeds), 99, None, {"status": "failed", "error": "OOM"})
    return run
