"""``bench study create``: build a study folder from runs.

The folder holds ``study.sqlite`` (questions, participants, orders, answers), ``refs/`` (copies of
the concept reference images the questions show) and ``study.json`` (a readable summary without the
admin token). It is built in a temporary folder and renamed into place, so a failure leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.spec import DatasetSpec, Scene
from lcbench.study.db import DB_NAME, StudyDB, StudyError, hash_token
from lcbench.study.design import StudyDesignError, participant_order, select_questions, usable_items
from lcbench.study.runs import ImageItem, RunCatalog, RunInfo

CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REFS = "refs"


@dataclass(frozen=True)
class StudyInfo:
    """What `bench study create` hands back: the folder, the admin token (shown once) and the codes."""

    path: Path
    admin_token: str
    participant_codes: list[str] = field(default_factory=list)
    questions: int = 0


def display_prompt(spec: DatasetSpec, text: str) -> str:
    """A prompt with concept tokens replaced by concept ids, readable for people."""
    for concept in sorted(spec.concepts.values(), key=lambda c: -len(c.tokens)):
        text = text.replace(concept.tokens, concept.id)
        for token in concept.token_list:
            text = text.replace(token, concept.id)
    return " ".join(text.split())


def _participant_codes(participants: int | Sequence[str]) -> list[str]:
    if isinstance(participants, int) and not isinstance(participants, bool):
        if participants < 1:
            raise StudyDesignError(
                f"participants: expected a count >= 1 or a list of codes (got {participants})"
            )
        return [f"P{i + 1:03d}-{secrets.token_hex(3)}" for i in range(participants)]
    codes = [str(c).strip() for c in participants]
    bad = [c for c in codes if not CODE_RE.match(c)]
    if not codes or bad:
        raise StudyDesignError(
            f"participants: expected codes of 1-64 letters, digits, '-' or '_' (bad: {bad or 'empty list'})"
        )
    if len(set(codes)) != len(codes):
        raise StudyDesignError(
            f"participants: expected unique codes (repeated: "
            f"{sorted({c for c in codes if codes.count(c) > 1})})"
        )
    return codes


DEFAULT_QUESTIONS = 60


def _is_reference(catalog: RunCatalog, item: ImageItem) -> bool:
    entry = catalog.run(item.run).manifest.get("methods", {}).get(item.method) or {}
    return isinstance(entry, dict) and entry.get("reference") is not None


def _filter_methods(
    catalog: RunCatalog, items: list[ImageItem], methods: Sequence[str] | None
) -> list[ImageItem]:
    """Items of the named methods; without names, every method but the calibration references."""
    if not methods:
        return [it for it in items if not _is_reference(catalog, it)]
    known = sorted({it.label for it in items} | {it.method for it in items})
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise StudyDesignError(f"methods: expected method keys of the runs {known} (unknown: {unknown})")
    return [it for it in items if it.label in methods or it.method in methods]


class _ReferenceCopier:
    """Copies each concept's reference images once into the study folder."""

    def __init__(self, folder: Path, max_references: int):
        self.folder, self.max_references = folder, max_references
        self._done: dict[tuple[str, str], list[str]] = {}

    def refs(self, run: RunInfo, concept_id: str) -> list[str]:
        from bench.assets import AssetResolver

        assert run.spec is not None
        key = (run.spec.spec_hash(), concept_id)
        if key not in self._done:
            asset_root = (run.manifest.get("dataset") or {}).get("asset_root")
            sources = AssetResolver(run.spec, asset_root).reference_images(concept_id)[: self.max_references]
            names = []
            for i, src in enumerate(sources):
                rel = f"{REFS}/{key[0]}/{concept_id}/{i:02d}{Path(src).suffix.lower()}"
                (self.folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, self.folder / rel)
                names.append(rel)
            self._done[key] = names
        return self._done[key]


def _question_row(qid: int, item: ImageItem, run: RunInfo, copier: _ReferenceCopier) -> dict[str, Any]:
    assert run.spec is not None
    scene: Scene = run.spec.scenes[item.scene]
    concepts = [
        {
            "id": region.concept,
            "class_name": run.spec.concepts[region.concept].class_name,
            "prompt": display_prompt(run.spec, region.prompt),
            "references": copier.refs(run, region.concept),
        }
        for region in scene.regions
    ]
    return {
        "id": qid,
        "run": item.run,
        "run_path": str(run.root),
        "method": item.method,
        "label": item.label,
        "scene": item.scene,
        "index": item.index,
        "seed": item.seed,
        "n_concepts": item.n_concepts,
        "style": item.style,
        "image": item.relative_image,
        "prompt": display_prompt(run.spec, scene.prompt),
        "concepts": concepts,
    }


def create_study(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    methods: Sequence[str] | None = None,
    questions_per_participant: int | None = None,
    participants: int | Sequence[str] = 25,
    seed: int = 0,
    max_references: int = 4,
) -> StudyInfo:
    """Build a study folder at ``out`` from runs; return its path, admin token and participant codes.

    ``questions_per_participant`` None asks about every usable image up to :data:`DEFAULT_QUESTIONS`, so a
    small run fits; a number larger than the usable images is an error naming the largest that fits.
    Calibration references are left out unless ``methods`` names them.
    """
    out = Path(out).resolve()
    if (out / DB_NAME).exists():
        raise StudyError(
            f"{out}: a study already exists here; choose another --out (answers are never overwritten)"
        )
    if out.exists() and any(out.iterdir()):
        raise StudyError(f"{out}: expected a new or empty folder for the study")
    catalog = RunCatalog(list(run_dirs))
    items = _filter_methods(catalog, catalog.items(), methods)
    if questions_per_participant is None:
        questions_per_participant = max(1, min(DEFAULT_QUESTIONS, len(usable_items(items))))
    chosen = select_questions(items, questions_per_participant, seed)
    codes = _participant_codes(participants)
    token = secrets.token_urlsafe(24)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        meta = {
            "seed": str(seed),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "questions_per_participant": str(len(chosen)),
            "runs": json.dumps({name: str(run.root) for name, run in catalog.runs.items()}),
            "methods": json.dumps(sorted({it.label for it in chosen})),
            "admin_token_sha256": hash_token(token),
        }
        db = StudyDB.initialise(staging, meta)
        copier = _ReferenceCopier(staging, max_references)
        db.add_questions(
            [_question_row(i + 1, it, catalog.run(it.run), copier) for i, it in enumerate(chosen)]
        )
        question_ids = list(range(1, len(chosen) + 1))
        for code in codes:
            db.add_participant(code, participant_order(question_ids, seed, code))
        summary = {k: v for k, v in meta.items() if k != "admin_token_sha256"}
        (staging / "study.json").write_text(json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StudyInfo(path=out, admin_token=token, participant_codes=codes, questions=len(chosen))
