"""Read the scores that ``bench score`` wrote beside one or more runs into one pandas DataFrame."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.store import RunStore
from metrics.api import CONVENTION_FIELDS
from metrics.scoring import CONVENTIONS, SCORES

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
        scores = store.root / SCORES
        if not scores.is_dir():
            raise FileNotFoundError(f"{scores}: no scores; run `bench score {store.root}` first")
        for folder in sorted(p for p in scores.iterdir() if (p / CONVENTIONS).is_file()):
            conv = json.loads((folder / CONVENTIONS).read_text(encoding="utf-8"))
            if conventions.setdefault(folder.name, conv) != conv:
                raise ValueError(
                    f"{folder / CONVENTIONS}: the runs scored '{folder.name}' with different conventions; "
                    "rescore them alike before comparing"
                )
            common = {
                "run": store.root.name,
                "dataset": dataset,
                "metric": folder.name,
                "metric_name": conv.get("metric"),
                "kind": conv.get("kind"),
                **_conventions_text(conv),
            }
            for path in sorted(folder.glob("items/*/*/*.json")):
                item = json.loads(path.read_text(encoding="utf-8"))
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
