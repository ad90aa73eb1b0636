"""Test helper: a small, self-contained set of runs (spec, reference images, PNGs, made-up scores)."""

from __future__ import annotations

import zlib
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
                "format": "lcbench-run/1",
                "scenes": list(SCENES),
                "seeds": seeds,
                "seed_scheme": "paper",
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


# -- a realistic benchmark run: 12 methods x 6 scenes x 4 seeds = 288 images, plus the calibration references --
BENCH_METHODS = (
    "cones2", "lora-composer", "lora-composer-ce", "lora-composer-ce-ci", "lora-composer-none", "lora-composite",
    "lora-merge", "lora-regional", "lora-switch", "mix-of-show", "mix-of-show-adapter", "paint-by-example",
)  # fmt: skip
BENCH_SCENES = {
    "duo_park": (("alice", "bob"), "real"),
    "duo_room": (("cat", "dog"), "anime"),
    "trio_beach": (("alice", "bob", "cat"), "real"),
    "trio_garden": (("bob", "cat", "dog"), "anime"),
    "quad_hall": (("alice", "bob", "cat", "dog"), "real"),
    "quad_lake": (("dog", "cat", "bob", "alice"), "real"),
}
REFERENCE_KINDS = {
    "ref-oracle": "oracle", "ref-swapped": "probe", "ref-floor-blank": "floor", "ref-floor-base": "floor",
    "ref-noise": "probe",
}  # fmt: skip
RANDOM_METHOD = "paint-by-example"  # its records list a random-weight model
# Reference levels per metric (clip_i separates the references, clip_t does not; rates are 0/1 per box).
REFERENCE_LEVELS = {
    "clip_i": {"ref-oracle": 0.80, "ref-swapped": 0.55, "ref-floor-base": 0.35, "ref-floor-blank": 0.20,
               "ref-noise": 0.10},
    "clip_t": {"ref-oracle": 0.30, "ref-swapped": 0.30, "ref-floor-base": 0.29, "ref-floor-blank": 0.30,
               "ref-noise": 0.31},
}  # fmt: skip
BENCH_METRICS = {  # key -> (registered name, kind, higher is better, scoring model)
    "clip_i": ("clip_i", "I", True, "builtin:toy-clip"),
    "clip_t": ("clip_t", "T", True, "builtin:toy-clip"),
    "clip_i@official": ("clip_i@official", "I", True, "builtin:toy-clip"),
    "clip_t@official": ("clip_t@official", "T", True, "builtin:toy-clip"),
    "vanishing": ("vanishing", "V", False, "builtin:toy-classifier"),
    "confusion": ("confusion", "C", False, "builtin:toy-classifier"),
}


def _bench_spec() -> dict:
    data = _spec_data()
    scenes = []
    for sid, (members, style) in BENCH_SCENES.items():
        step = 1.0 / len(members)
        regions = [
            {"concept": cid, "box": [round(i * step, 4), 0.1, round((i + 1) * step, 4), 0.9],
             "prompt": f"a <{cid}1> <{cid}2> {cid}"}
            for i, cid in enumerate(members)
        ]  # fmt: skip
        prompt = " and ".join(f"<{c}1> <{c}2>" for c in members) + " together"
        scenes.append({"id": sid, "prompt": prompt, "width": 64, "height": 64, "regions": regions, "style": style})
    data.update(name="benchtoy", scenes=scenes, benchmarks=[{"id": "all", "scenes": "all", "seeds": 4}])
    return data


def _scene_image(scene, seed: int, colour: tuple[int, int, int]) -> Image.Image:
    """Noise with one solid block per region: something to see at native resolution."""
    image = _noise_image(seed, colour)
    pixels = np.asarray(image).copy()
    for i, region in enumerate(scene.regions):
        x0, y0, x1, y1 = (round(v * 64) for v in region.box)
        pixels[y0 + 8 : y1 - 8, x0 + 3 : x1 - 3] = (40 * i + 60, 255 - 50 * i, 90 + 30 * i)
    return Image.fromarray(pixels, "RGB")


def _value(metric: str, method: str, scene: str, index: int, region: int) -> float:
    """A made-up score: reference levels from REFERENCE_LEVELS, methods spread between, seed noise 0.01."""
    rng = np.random.default_rng(zlib.crc32(repr((metric, method, scene, index, region)).encode()))
    name, kind, _, _ = BENCH_METRICS[metric]
    if kind in ("V", "C"):
        p = {"ref-oracle": 0.0, "ref-swapped": 0.5, "ref-floor-base": 0.9, "ref-floor-blank": 1.0,
             "ref-noise": 1.0}.get(method, 0.3 + 0.05 * (len(method) % 9))  # fmt: skip
        if kind == "C":
            p = 0.0 if method.startswith("ref-") and method != "ref-swapped" else p / 3
        return float(rng.random() < p)
    levels = REFERENCE_LEVELS["clip_i" if name.startswith("clip_i") else "clip_t"]
    base = levels.get(method, 0.3 + 0.02 * (BENCH_METHODS.index(method) if method in BENCH_METHODS else 0))
    return round(float(base + rng.normal(0, 0.01)), 5)


def make_benchmark_run(folder: str | Path, seeds: int = 4, scores: bool = True) -> Path:
    """A run like ``bench run --dataset toy`` then ``bench score`` make: 12 methods x 6 scenes x ``seeds`` seeds
    (288 images with 4 seeds), the five calibration references, records with params, deviations, timings and
    models, and (with ``scores``) made-up scores of six metrics in the layout `bench score` writes."""
    folder = Path(folder)
    assets = folder / "assets"
    for i, cid in enumerate(CONCEPTS):
        path = assets / "refs" / cid / "00.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        _noise_image(100 * i, (60 * i, 200 - 40 * i, 120)).save(path)
    spec_path = folder / "benchtoy.yaml"
    spec_path.write_text(yaml.safe_dump(_bench_spec(), sort_keys=False), encoding="utf-8")
    spec = load_spec(spec_path)
    store = RunStore(folder / "bench_run")
    store.write_spec(resolved_document(spec, assets))
    methods = {m: {"name": m, "params": {"steps": 25}, "description": f"the {m} method",
                   "deviations": [f"{m}: deviation one"], "reference": None} for m in BENCH_METHODS}
    methods.update({m: {"name": m, "params": {}, "description": f"reference {k}", "deviations": [], "reference": k}
                    for m, k in REFERENCE_KINDS.items()})  # fmt: skip
    store.write_manifest(
        {"format": "lcbench-run/1", "dataset": {"name": spec.name, "path": str(spec_path),
         "spec_hash": spec.spec_hash(), "asset_root": str(assets)}, "benchmark": "all",
         "scenes": list(BENCH_SCENES), "seeds": seeds, "seed_scheme": "paper", "methods": methods,
         "git_revision": "0123456789abcdef0123456789abcdef01234567", "packages": {"torch": "2.14.1"}}
    )  # fmt: skip
    for k, method in enumerate(methods):
        models = [{"kind": "pipeline", "ref": "builtin:toy-sd", "random_weights": False}]
        if method == RANDOM_METHOD:
            models.append({"kind": "inpainting", "ref": "builtin:random-pbe", "random_weights": True})
        if method in ("ref-floor-blank", "ref-noise", "ref-oracle", "ref-swapped"):
            models = []
        for s, scene_id in enumerate(BENCH_SCENES):
            scene = spec.scenes[scene_id]
            for index in range(seeds):
                seed = 1000 * s + index
                record = {"status": "ok", "method_name": method, "params": methods[method]["params"],
                          "deviations": methods[method]["deviations"], "seconds": round(0.5 + 0.01 * k, 3),
                          "models": models, "record": {"steps_run": 25}}  # fmt: skip
                colour = (30 + 15 * k % 200, 200 - 9 * k % 150, 90 + 7 * k % 120)
                store.write_item(ItemKey(method, scene_id, index), seed, _scene_image(scene, seed + k, colour), record)
    if scores:
        write_benchmark_scores(store.root)
    return store.root


def write_benchmark_scores(run_root: str | Path) -> None:
    """Made-up scores of :data:`BENCH_METRICS` for every image of a benchmark run."""
    store = RunStore(run_root)
    scores = ScoreStore(store.root)
    spec = store.read_spec()
    for metric, (name, kind, higher, model) in BENCH_METRICS.items():
        scores.write_conventions(metric, {"metric": name, "kind": kind, "params": {}, "model": model,
                                          "weights": "sha256:0000", "higher_is_better": higher})
        for record in store.records():
            scene = spec.scenes[record.key.scene]
            rows = [{"concept": r.concept, "region": i,
                     "value": _value(metric, record.key.method, scene.id, record.key.index, i)}
                    for i, r in enumerate(scene.regions)]  # fmt: skip
            scores.write_item(metric, record, scene.style, rows)
