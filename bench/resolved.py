"""The resolved spec a run folder keeps: the dataset as the run used it, every file reference absolute.

``bench run`` writes it to ``RUN/spec.json`` (JSON in the spec file's own schema, so :func:`load_spec`
reads it back and validates it). Scoring, reports, grids, the dashboard and studies read the spec
from there, never from the live YAML: moving or editing the spec file does not break a finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.models import is_builtin
from bench.spec import DatasetSpec


def _absolute(ref: str | None, folder: Path) -> str | None:
    if ref is None or is_builtin(ref) or Path(ref).expanduser().is_absolute():
        return ref
    return str((folder / ref).resolve())


def resolved_document(spec: DatasetSpec, asset_root: str | Path) -> dict[str, Any]:
    """The spec as a document of its own schema, with the asset root (a folder, or a ``builtin:`` root) and
    the evaluation files (relative to the spec's folder) absolute; asset paths stay relative to the root."""
    folder = spec.path.parent
    evaluation = {
        key: _absolute(value, folder) if key != "clip_model" else value
        for key, value in (("clip_model", spec.evaluation.clip_model), ("clip_weights", spec.evaluation.clip_weights),
                           ("classifier", spec.evaluation.classifier), ("oracle", spec.evaluation.oracle))
        if value is not None
    }
    document: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "asset_root": str(asset_root),
        "base_models": dict(spec.base_models),
        "concepts": [_concept(c) for c in spec.concepts.values()],
        "scenes": [_scene(s) for s in spec.scenes.values()],
        "benchmarks": [
            {"id": b.id, "scenes": list(b.scenes), "seeds": b.seeds, "seed_scheme": b.seed_scheme}
            for b in spec.benchmarks.values()
        ],
    }
    if spec.loss_level is not None:
        document["loss_level"] = spec.loss_level
    if evaluation:
        document["evaluation"] = evaluation
    return document


def _concept(concept: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": concept.id, "class_name": concept.class_name, "style": concept.style, "tokens": concept.tokens,
        "lora": concept.lora, "references": concept.references, "background": concept.background,
    }  # fmt: skip
    if concept.masks is not None:
        data["masks"] = concept.masks
    if concept.attributes:
        data["attributes"] = dict(concept.attributes)
    return data


def _scene(scene: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": scene.id,
        "prompt": scene.prompt,
        "negative_prompt": scene.negative_prompt,
        "width": scene.width,
        "height": scene.height,
        "seed": scene.seed,
        "style": scene.style,
        "regions": [
            {"concept": r.concept, "box": list(r.box), "prompt": r.prompt, "negative_prompt": r.negative_prompt,
             "adapter_weights": dict(r.adapter_weights)}
            for r in scene.regions
        ],  # fmt: skip
        "conditions": dict(scene.conditions),
        "adapter_global_weights": dict(scene.adapter_global_weights),
        "image_guidance": scene.image_guidance,
    }
    status = getattr(scene, "status", "ok")
    if status != "ok":
        data["status"] = status
        data["status_reason"] = scene.status_reason
    return data
