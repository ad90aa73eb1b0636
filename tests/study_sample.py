"""Test helper: a small, self-contained set of runs (spec, reference images, PNGs, made-up scores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from bench.resolved import resolved_document
from bench.spec import load_spec
from bench.store import ItemKey, RunStore, ScoreStore

CONCEPTS = ("alice", "bob", "cat", "dog")
SCENES = {
    "duo_park": ("alice", "bob"),
    "duo_room": ("cat", "dog"),
    "trio_beach": ("alice", "bob", "cat"),
    "quad_hall": ("alice", "bob", "cat", "dog"),
}
RUNS = {"run_a": ("lora_composer", "mix_of_show"), "run_b": ("paint_by_example",)}


def _spec_data() -> dict:
    concepts = [
        {
            "id": cid,
            "class_name": "person" if cid in ("alice", "bob") else cid,
            "style": "anime" if cid in ("cat", "dog") else "real",
            "tokens": f"<{cid}1> <{cid}2>",
            "lora": f"loras/{cid}.safetensors",
            "references": f"refs/{cid}",
        }
        for cid in CONCEPTS
    ]
    scenes = []
    for sid, members in SCENES.items():
        step = 1.0 / len(members)
        regions = [
            {
                "concept": cid,
                "box": [round(i * step, 4), 0.1, round((i + 1) * step, 4), 0.9],
                "prompt": f"a <{cid}1> <{cid}2> {cid}",
            }
            for i, cid in enumerate(members)
        ]
        prompt = " and ".join(f"<{c}1> <{c}2>" for c in members) + " together"
        scenes.append(
            {
                "id": sid,
                "prompt": prompt,
                "width": 64,
                "height": 64,
                "regions": regions,
                "style": "anime" if sid == "duo_room" else "real",
            }
        )
    return {
        "name": "studytoy",
        "concepts": concepts,
        "scenes": scenes,
        "benchmarks": [{"id": "all", "scenes": "all", "seeds": 2}],
    }


def _noise_image(seed: int, colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.array(colour, dtype=np.int16), (size, size, 3))
    pixels = np.clip(base + rng.integers(-30, 30, size=(size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def make_sample_runs(folder: str | Path, seeds: int = 2) -> list[Path]:
    """Write a spec with assets and two runs (three methods, 2-4 concept scenes) under ``folder``."""
    folder = Path(folder)
    assets = folder / "assets"
    for i, cid in enumerate(CONCEPTS):
        for j in range(2):
            path = assets / "refs" / cid / f"{j:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _noise_image(100 * i + j, (60 * i, 200 - 40 * i, 120)).save(path)
    spec_path = folder / "studytoy.yaml"
    spec_path.write_text(yaml.safe_dump(_spec_data(), sort_keys=False), encoding="utf-8")
    spec = load_spec(spec_path)
    roots = []
    colours = {
        "lora_composer": (200, 60, 60),
        "mix_of_show": (60, 200, 60),
        "paint_by_example": (60, 60, 200),
    }
    for run, methods in RUNS.items():
        store = RunStore(folder / run)
        store.write_spec(resolved_document(spec, assets))
        store.write_manifest(
            {
                "dataset": {
                    "name": spec.name,
                    "path": str(spec_path),
                    "spec_hash": spec.spec_hash(),
                    "asset_root": str(assets),
                },
                "methods": {m: {"name": m, "params": {}} for m in methods},
            }
        )
        for method in methods:
            for k, scene in enumerate(SCENES):
                for index in range(seeds):
                    seed = 1000 * k + index
                    image = _noise_image(seed + len(method), colours[method])
                    store.write_item(ItemKey(method, scene, index), seed, image, {"status": "ok"})
        roots.append(store.root)
    return roots


def write_sample_scores(run_root: str | Path) -> None:
    """Write made-up clip_i / clip_t scores beside a sample run, in the layout `bench score` writes."""
    store = RunStore(run_root)
    scores = ScoreStore(store.root)
    spec = store.read_spec()
    for metric, kind in (("clip_i", "I"), ("clip_t", "T")):
        scores.write_conventions(metric, {"metric": metric, "kind": kind, "params": {}, "model": "sample"})
        for record in store.records():
            scene = spec.scenes[record.key.scene]
            base = 0.5 + 0.1 * len(record.key.method) / 10 + 0.01 * record.key.index
            rows = [
                {"concept": r.concept, "region": i, "value": round(base + 0.01 * i, 4)}
                for i, r in enumerate(scene.regions)
            ]
            scores.write_item(metric, record, scene.style, rows)
