"""Is a lost box lost to the composition, to its place, or to the concept? Each scene beside variants of itself.

    python scripts/diagnose_composition.py --method lora-composer --out runs/composition \
        [--dataset toy] [--assets DIR] [--benchmark default] [--seeds N] [--metric vanishing] [--workers auto]

For every scene of the benchmark (status 'ok') one method generates, with the scene's own seeds (so the same
initial noise in every variant):

- ``composed``: the scene itself, as the main job generates it;
- ``alone``: each region by itself, in its own box with its own prompt; the global prompt is the region prompt
  with the concept's tokens replaced by its class word, as the calibration's floor names concepts. Condition
  images (sketch, pose) are dropped: they draw the whole scene;
- ``alone_scene_prompt``: the same, under the scene's own global prompt, which names the other concepts' class
  words too (so ``alone`` against it is the global prompt's part, it against ``composed`` the other regions');
- ``moved``: the scene with its concepts rotated over its boxes (region i's box gets region i+1's concept and
  prompt; the global prompt is unchanged). Scenes of one region have no such variant.

The variants go into a spec of their own (``OUT/composition.json``), ``bench run`` and ``bench score --metrics
METRIC --no-calibrate`` make and score them in ``OUT`` (a killed run resumes), and the table gives, per
(scene, region), the metric's mean over seeds in each variant.
A box lost composed but drawn alone is lost to the composition: to the global prompt where it is lost alone
under the scene's prompt as well, to the other regions where it is not. One lost alone too is lost to the concept
or to its place, which the moved column tells apart.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.assets import AssetResolver
from bench.catalog import load_dataset
from bench.resolved import resolved_document
from bench.spec import DatasetSpec, Scene, load_spec, substitute_classes
from bench.store import atomic_write_json
from reports.load import load_scores

SPEC_FILE = "composition.json"
VARIANTS = ("composed", "alone", "alone_scene_prompt", "moved")


@dataclass(frozen=True)
class Variant:
    """One generated scene of the diagnosis: which scene it varies, how, and where its regions come from."""

    scene: str
    kind: str
    homes: tuple[int, ...]  # per generated region: the index of the original scene's region it carries


def _scene_document(document: dict[str, Any], scene_id: str) -> dict[str, Any]:
    return next(s for s in document["scenes"] if s["id"] == scene_id)


def variant_scenes(spec: DatasetSpec, scene: Scene, original: dict[str, Any]) -> list[tuple[dict[str, Any], Variant]]:
    """The scene documents of one scene's variants (:data:`VARIANTS`), each with its :class:`Variant`."""
    composed = dict(original, id=f"{scene.id}+composed")
    n = len(scene.regions)
    out = [(composed, Variant(scene.id, "composed", tuple(range(n))))]
    for i, region in enumerate(scene.regions):
        alone_region = dict(original["regions"][i])
        alone = dict(original, id=f"{scene.id}+alone-{i}", regions=[alone_region], conditions={},
                     adapter_global_weights={}, image_guidance=False,
                     prompt=substitute_classes(region.prompt, [spec.concepts[region.concept]]))
        out.append((alone, Variant(scene.id, "alone", (i,))))
        in_scene = dict(alone, id=f"{scene.id}+alone-scene-prompt-{i}", prompt=original["prompt"])
        out.append((in_scene, Variant(scene.id, "alone_scene_prompt", (i,))))
    if n > 1:
        moved_regions = [dict(original["regions"][(i + 1) % n], box=original["regions"][i]["box"]) for i in range(n)]
        moved = dict(original, id=f"{scene.id}+moved", regions=moved_regions)
        out.append((moved, Variant(scene.id, "moved", tuple((i + 1) % n for i in range(n)))))
    return out


def composition_spec(spec: DatasetSpec, benchmark: str, seeds: int | None = None, assets: Path | None = None
                     ) -> tuple[dict[str, Any], dict[str, Variant]]:
    """The diagnosis's spec document (one benchmark, ``default``, of every variant; the asset root ``assets`` or
    the dataset's) and its variants by scene id."""
    if benchmark not in spec.benchmarks:
        raise ValueError(f"--benchmark: '{benchmark}' is not a benchmark of {spec.path}; expected one of "
                         f"{sorted(spec.benchmarks)}")
    bench_spec = spec.benchmarks[benchmark]
    document = resolved_document(spec, AssetResolver(spec, assets).root)
    scenes: list[dict[str, Any]] = []
    variants: dict[str, Variant] = {}
    for scene_id in bench_spec.scenes:
        scene = spec.scenes[scene_id]
        if scene.status != "ok":
            continue
        for scene_doc, variant in variant_scenes(spec, scene, _scene_document(document, scene_id)):
            scenes.append(scene_doc)
            variants[scene_doc["id"]] = variant
    document.update(name=f"{spec.name}-composition", scenes=scenes, benchmarks=[
        {"id": "default", "scenes": list(variants), "seeds": seeds or bench_spec.seeds,
         "seed_scheme": bench_spec.seed_scheme}])
    return document, variants


def composition_table(scores: pd.DataFrame, variants: dict[str, Variant], method: str, metric: str) -> pd.DataFrame:
    """Per region of each original scene (its index and concept): the metric's mean over seeds in each variant,
    and the number of seeds of the composed scene."""
    rows = scores[(scores["method"] == method) & (scores["metric"] == metric) & scores["region"].notna()]
    if rows.empty:
        raise ValueError(f"no '{metric}' scores of method '{method}' per region; expected the output of "
                         f"`bench score --metrics {metric}` on a per-box metric")
    rows = rows.assign(
        scene=rows["scene"].map(lambda s: variants[s].scene),
        variant=rows["scene"].map(lambda s: variants[s].kind),
        region=[variants[s].homes[int(r)] for s, r in zip(rows["scene"], rows["region"], strict=True)],
    )
    keys = ["scene", "region", "concept"]
    table = rows.pivot_table(index=keys, columns="variant", values="value", aggfunc="mean")
    table["seeds"] = rows[rows["variant"] == "composed"].groupby(keys)["index"].nunique()
    return table.reindex(columns=["seeds", *[v for v in VARIANTS if v in table.columns]])


def _bench(argv: Sequence[str]) -> None:
    from lcbench.cli import main as bench_main

    if (code := bench_main(list(argv))) != 0:
        raise SystemExit(f"bench {argv[0]} failed with exit status {code}")


def main(argv: list[str] | None = None) -> int:
    """Make the variants, score them and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, help="the method to diagnose (one registered name)")
    parser.add_argument("--out", required=True, type=Path, help="run folder of the variants (resumed if there)")
    parser.add_argument("--dataset", default="toy")
    parser.add_argument("--assets", type=Path, default=None,
                        help="the dataset's asset root, e.g. a copy with other LoRAs (default: the dataset's)")
    parser.add_argument("--benchmark", default="default")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per scene (default: the benchmark's)")
    parser.add_argument("--metric", default="vanishing", help="a per-box metric (default: vanishing)")
    parser.add_argument("--workers", default="auto")
    args = parser.parse_args(argv)
    document, variants = composition_spec(load_dataset(args.dataset), args.benchmark, args.seeds, args.assets)
    args.out.mkdir(parents=True, exist_ok=True)
    spec_path = args.out / SPEC_FILE
    atomic_write_json(spec_path, document)
    load_spec(spec_path)  # the same validation as any spec file, before anything runs
    _bench(["run", "--methods", args.method, "--dataset", str(spec_path), "--out", str(args.out),
            "--workers", str(args.workers)])
    _bench(["score", str(args.out), "--metrics", args.metric, "--no-calibrate"])
    table = composition_table(load_scores([args.out]), variants, args.method, args.metric)
    pd.set_option("display.width", 160)
    print(table.round(3).to_string())
    means = table[[v for v in VARIANTS if v in table.columns]].mean()
    print("mean over boxes: " + json.dumps({k: round(float(v), 4) for k, v in means.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
