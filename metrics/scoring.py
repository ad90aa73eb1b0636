"""``bench score RUN``: score every finished image of a run and write the scores beside it.

The spec comes from the run folder (the resolved spec ``bench run`` wrote), the scores go to the
run's :class:`bench.store.ScoreStore`. Each item file is written atomically once its batch is
scored, so a rerun skips finished items and a killed run leaves nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.spec import DatasetSpec
from bench.store import ItemRecord, RunStore, ScoreStore
from metrics.api import Metric, MetricSpec, ScoreItem
from metrics.context import ReferenceSource, ScoreContext
from metrics.models import RANDOM_DINO

DEFAULT_METRICS = ("clip_i", "clip_t", "clip_i@official", "clip_t@official")
CLASSIFIER_METRICS = ("vanishing", "confusion")  # added to the defaults when there is a box judge


def default_metrics(spec: DatasetSpec, judge: str | None = None) -> tuple[str, ...]:
    """The metrics ``bench score`` computes when none are named: the CLIP four, plus vanishing and confusion
    when there is a box judge (``judge``, i.e. ``--judge``, or the spec's ``evaluation.classifier``)."""
    judged = judge is not None or spec.evaluation.classifier is not None
    return DEFAULT_METRICS + (CLASSIFIER_METRICS if judged else ())


class ScoreError(RuntimeError):
    """Scores cannot be written as asked (unknown metric, conventions differ from existing scores)."""


def _registry(registry: Mapping[str, MetricSpec] | None) -> Mapping[str, MetricSpec]:
    if registry is not None:
        return registry
    from metrics.plugin import builtin_metrics

    return {m.name: m for m in builtin_metrics()}


def _check_conventions(scores: ScoreStore, metric_key: str, conventions: dict[str, Any]) -> None:
    old = scores.conventions(metric_key)
    if old is None:
        scores.write_conventions(metric_key, conventions)
        return
    path = scores.folder(metric_key) / "conventions.json"
    for field in sorted(set(old) | set(conventions)):
        if old.get(field) != json.loads(json.dumps(conventions.get(field), default=str)):
            raise ScoreError(
                f"{path}: field '{field}': the existing scores were made with {old.get(field)!r}, "
                f"this run asks for "
                f"{conventions.get(field)!r}; delete {path.parent} to rescore, or keep the old conventions"
            )


def _load_item(record: ItemRecord, scenes: Mapping[str, Any], store: RunStore) -> ScoreItem:
    """The item's scene and decoded image; a broken image raises StoreError naming its file."""
    if record.key.scene not in scenes:
        raise ScoreError(f"{store.record_path(record.key)}: field 'scene': expected a scene of {store.spec_path} "
                         f"(got {record.key.scene!r})")
    image = store.load_image(record)
    return ScoreItem(record.key.method, scenes[record.key.scene], record.key.index, record.seed, image)


def score_run(
    run_dir: str | Path,
    metric_names: Sequence[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    clip_model: str | None = None,
    clip_weights: str | Path | None = None,
    dino_model: str | Path = RANDOM_DINO,
    device: str = "cpu",
    batch_size: int = 16,
    cache_dir: Path | None = None,
    references: ReferenceSource | None = None,
    registry: Mapping[str, MetricSpec] | None = None,
    quiet: bool = False,
    judge: str | None = None,
) -> Path:
    """Score the run's finished images with each metric; return the scores folder (``RUN/scores``).

    ``params`` maps a metric name to parameter overrides (e.g. ``{"clip_i": {"crop_mode": "mask_grey"}}``).
    ``metric_names`` defaults to :func:`default_metrics` of the run's spec; ``clip_model`` / ``clip_weights``
    default to the spec's ``evaluation`` section, else ``builtin:random-clip``. ``judge`` (``--judge``, see
    :mod:`metrics.judges.spec`) is the box judge of vanishing/confusion, else the spec's ``evaluation.classifier``.
    ``references`` defaults to ``bench.assets.AssetResolver`` on the manifest's dataset.
    """
    store = RunStore(run_dir)
    manifest = store.read_manifest()
    spec = store.read_spec()
    if references is None:
        from bench.assets import AssetResolver

        references = AssetResolver(spec, (manifest.get("dataset") or {}).get("asset_root"))
    scores = ScoreStore(store.root)
    ctx = ScoreContext(
        spec,
        references,
        clip_model=clip_model,
        clip_weights=clip_weights,
        dino_model=dino_model,
        device=device,
        cache_dir=cache_dir if cache_dir is not None else scores.reference_cache,
        judge=judge,
    )
    metrics = _registry(registry)
    records = [r for r in store.records() if r.ok and r.image is not None]
    # 1. Resolve every metric and check its conventions against scores already on disk.
    plans: list[tuple[Metric, str, set[str]]] = []
    for name in metric_names or default_metrics(spec, judge):
        if name not in metrics:
            raise ScoreError(f"metric '{name}': expected one of {sorted(metrics)}")
        mspec = metrics[name]
        resolved = mspec.resolve_params((params or {}).get(name, {}))
        metric = mspec.create(resolved)
        for resource in mspec.needs:
            ctx.resource(resource)
        metric_key = mspec.key(resolved)
        conventions = {"metric": name, "params": resolved, "kind": metric.kind,
                       "higher_is_better": mspec.higher_is_better, **metric.conventions(ctx)}
        _check_conventions(scores, metric_key, conventions)
        pending = {r.key.relative for r in records if not scores.has_item(metric_key, r.key)}
        plans.append((metric, metric_key, pending))
    # 2. Score in batches: each image is decoded once and goes to every metric that still needs it.
    todo = [r for r in records if any(r.key.relative in pending for _, _, pending in plans)]
    total = sum(len(pending) for _, _, pending in plans)
    with tqdm(total=total, desc="score", unit="score", disable=quiet) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            items = {r.key.relative: _load_item(r, spec.scenes, store) for r in batch}
            for metric, metric_key, pending in plans:
                mine = [r for r in batch if r.key.relative in pending]
                if not mine:
                    continue
                rows = metric.score([items[r.key.relative] for r in mine], ctx)
                for record, item_rows in zip(mine, rows, strict=True):
                    scores.write_item(metric_key, record, spec.scenes[record.key.scene].style, item_rows)
                bar.update(len(mine))
    return scores.root
