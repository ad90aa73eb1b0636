"""Read the scores that ``bench score`` wrote beside one or more runs into one pandas DataFrame."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.spec import SpecError
from bench.store import RunStore, ScoreStore, StoreError
from metrics.api import CONVENTION_FIELDS
from reports.info import MetricInfo, metric_info

COLUMNS = (
    "run", "dataset", "method", "method_name", "label", "reference", "random_weights", "scene", "style",
    "n_concepts", "index", "seed", "concept", "region", "metric", "metric_name", "kind", "value",
    *CONVENTION_FIELDS,
)  # fmt: skip


def _conventions_text(conventions: dict[str, Any]) -> dict[str, Any]:
    return {f: conventions.get(f) for f in CONVENTION_FIELDS}


def _random_items(store: RunStore) -> dict[tuple[str, str, int], bool]:
    """(method, scene, index) -> whether the image's record lists a model with random weights."""
    return {
        (r.key.method, r.key.scene, r.key.index): any(m.get("random_weights") for m in r.data.get("models") or [])
        for r in store.records()
    }


def _labels(runs_methods: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A method's row label: its key, or ``run:key`` when another run has the same key."""
    runs_of = Counter(method for _, method in set(runs_methods))
    return {(run, method): method if runs_of[method] == 1 else f"{run}:{method}" for run, method in runs_methods}


def load_scores(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (run, method, scene, seed, region/concept, metric variant), with the convention columns.

    ``run`` is the run folder's name; ``method`` the store key, ``method_name`` the registered name,
    ``label`` the key (``run:key`` when two runs hold the same key), ``reference`` the calibration
    reference kind (``oracle``, ``probe``, ``floor``; None for real methods), ``random_weights`` whether
    the image's record lists a random-weight model. ``attrs["conventions"]`` maps each metric key to its
    full conventions record, ``attrs["metrics"]`` to its :class:`reports.info.MetricInfo`,
    ``attrs["runs"]`` each run name to its folder.
    """
    rows: list[dict[str, Any]] = []
    conventions: dict[str, dict[str, Any]] = {}
    roots: dict[str, str] = {}
    for run_dir in run_dirs:
        store = RunStore(run_dir)
        manifest = store.read_manifest()
        methods = manifest.get("methods") or {}
        dataset = (manifest.get("dataset") or {}).get("name")
        try:
            scene_sizes = {sid: len(s.regions) for sid, s in store.read_spec().scenes.items()}
        except (SpecError, StoreError):
            scene_sizes = {}
        random_items = _random_items(store)
        roots[store.root.name] = str(store.root.resolve())
        scores = ScoreStore(store.root)
        if not scores.root.is_dir():
            raise FileNotFoundError(f"{scores.root}: no scores; run `bench score {store.root}` first")
        for metric_key in scores.metric_keys():
            conv = scores.conventions(metric_key) or {}
            if conventions.setdefault(metric_key, conv) != conv:
                raise ValueError(
                    f"{scores.folder(metric_key) / 'conventions.json'}: the runs scored '{metric_key}' with "
                    "different conventions; rescore them alike before comparing"
                )
            common = {
                "run": store.root.name,
                "dataset": dataset,
                "metric": metric_key,
                "metric_name": conv.get("metric"),
                "kind": conv.get("kind"),
                **_conventions_text(conv),
            }
            for item in scores.items(metric_key):
                method = item["method"]
                entry = methods.get(method) or {}
                base = {
                    **common,
                    "method": method,
                    "method_name": entry.get("name", method),
                    "reference": entry.get("reference"),
                    "random_weights": random_items.get((method, item["scene"], int(item["index"])), False),
                    "scene": item["scene"],
                    "style": item.get("style"),
                    "n_concepts": scene_sizes.get(item["scene"]),
                    "index": item["index"],
                    "seed": item["seed"],
                }
                for row in item["rows"]:
                    rows.append(
                        {**base, "concept": row["concept"], "region": row["region"], "value": row["value"]}
                    )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    labels = _labels(list(zip(frame["run"], frame["method"], strict=True)))
    frame["label"] = [labels[(r, m)] for r, m in zip(frame["run"], frame["method"], strict=True)]
    frame["random_weights"] = frame["random_weights"].astype(bool)
    frame.attrs["conventions"] = conventions
    frame.attrs["metrics"] = metric_infos(conventions)
    frame.attrs["runs"] = roots
    return frame


def metric_infos(conventions: dict[str, dict[str, Any]]) -> dict[str, MetricInfo]:
    """Each metric key's :class:`reports.info.MetricInfo`."""
    return {key: metric_info(key, conv) for key, conv in sorted(conventions.items())}
