"""Read the scores that ``bench score`` wrote beside one or more runs into one pandas DataFrame."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.store import RunStore, ScoreStore
from metrics.api import CONVENTION_FIELDS

COLUMNS = (
    "run", "dataset", "method", "method_name", "scene", "style", "index", "seed", "concept", "region",
    "metric", "metric_name", "kind", "value", *CONVENTION_FIELDS,
)  # fmt: skip


def _conventions_text(conventions: dict[str, Any]) -> dict[str, Any]:
    return {f: conventions.get(f) for f in CONVENTION_FIELDS}


def load_scores(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per (run, method, scene, seed, region/concept, metric variant), with the convention columns.

    ``run`` is the run folder's name; ``method`` the store key, ``method_name`` the registered name.
    ``attrs["conventions"]`` maps each metric key to its full conventions record.
    """
    rows: list[dict[str, Any]] = []
    conventions: dict[str, dict[str, Any]] = {}
    for run_dir in run_dirs:
        store = RunStore(run_dir)
        manifest = store.read_manifest()
        methods = manifest.get("methods") or {}
        dataset = (manifest.get("dataset") or {}).get("name")
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
                base = {
                    **common,
                    "method": method,
                    "method_name": (methods.get(method) or {}).get("name", method),
                    "scene": item["scene"],
                    "style": item.get("style"),
                    "index": item["index"],
                    "seed": item["seed"],
                }
                for row in item["rows"]:
                    rows.append(
                        {**base, "concept": row["concept"], "region": row["region"], "value": row["value"]}
                    )
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["conventions"] = conventions
    return frame
