"""Validation of a box judge against a trusted one, on a dataset's oracle renders: perfect, swapped and blank.

For each scene and seed, the dataset's oracle (``evaluation.oracle``, e.g. the toy world's
``builtin:toy-render``) draws three images:

- ``perfect``: every region's concept in its box (the oracle's ``render``);
- ``swapped``: the concepts rotated by one region (region i shows region i+1's concept), so every box
  of a scene with two or more different concepts holds another concept of the scene;
- ``blank``: the scene's background without objects (the oracle's ``blank``).

Both judges answer for every box; a box *agrees* when both give the same vanishing and the same
confusion verdict (the rates the metrics report). :func:`validate_judge` returns every box's
comparison; :meth:`JudgeValidation.summary` the agreement per condition and overall.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.spec import DatasetSpec, Scene
from metrics.api import BoxJudge, BoxQuery, BoxVerdict, confused, vanished
from metrics.box_concepts import scene_queries
from metrics.context import ReferenceSource, ScoreContext

CONDITIONS = ("perfect", "swapped", "blank")


@dataclass(frozen=True)
class BoxComparison:
    """One box under one condition: what was drawn there, and both judges' verdicts."""

    condition: str
    scene: str
    seed: int
    region: int
    concept: str
    shown: str | None  # the concept drawn in the box (None: blank)
    reference: tuple[bool, bool]  # (vanished, confused) by the trusted judge
    candidate: tuple[bool, bool]
    reference_reading: str
    candidate_reading: str

    @property
    def agree(self) -> bool:
        """Both judges give the same vanishing and confusion verdicts."""
        return self.reference == self.candidate


@dataclass(frozen=True)
class JudgeValidation:
    """Every compared box, and who the judges were."""

    reference: str
    candidate: str
    rows: tuple[BoxComparison, ...]

    def agreement(self, condition: str | None = None) -> tuple[float, int]:
        """Share of agreeing boxes (NaN when none) and the box count, for one condition or all."""
        rows = [r for r in self.rows if condition is None or r.condition == condition]
        if not rows:
            return float("nan"), 0
        return sum(r.agree for r in rows) / len(rows), len(rows)

    def summary(self) -> list[dict[str, Any]]:
        """One row per condition and one for all: boxes, agreeing boxes, agreement."""
        out = []
        for condition in (*CONDITIONS, None):
            share, count = self.agreement(condition)
            out.append({"condition": condition or "all", "boxes": count,
                        "agree": sum(r.agree for r in self.rows if condition in (None, r.condition)),
                        "agreement": share})
        return out

    def markdown(self) -> str:
        """The summary as a Markdown table, with both judges named."""
        lines = [f"Reference judge: `{self.reference}`; candidate judge: `{self.candidate}`.", "",
                 "| condition | boxes | agree | agreement % |", "|---|---|---|---|"]
        for row in self.summary():
            lines.append(f"| {row['condition']} | {row['boxes']} | {row['agree']} | {100 * row['agreement']:.1f} |")
        return "\n".join(lines)


def shown_concepts(scene: Scene, condition: str) -> list[str | None]:
    """The concept drawn in each region under ``condition``."""
    ids = list(scene.concept_ids)
    if condition == "perfect":
        return list(ids)
    if condition == "swapped":
        return ids[1:] + ids[:1]
    if condition == "blank":
        return [None] * len(ids)
    raise ValueError(f"condition: expected one of {list(CONDITIONS)} (got {condition!r})")


def _verdict_pair(verdict: BoxVerdict, query: BoxQuery) -> tuple[bool, bool]:
    return vanished(verdict), confused(verdict, query)


def validate_judge(
    spec: DatasetSpec,
    references: ReferenceSource,
    reference: BoxJudge,
    candidate: BoxJudge,
    oracle: Any,
    seeds: Iterable[int] = range(4),
    scenes: Sequence[str] | None = None,
) -> JudgeValidation:
    """Compare ``candidate`` with ``reference`` on the oracle's perfect, swapped and blank renders.

    ``oracle`` has ``render(scene, concepts, seed)`` and ``blank(scene, seed)`` (``bench.models.create(ref,
    "oracle")``); ``references`` gives the concepts' reference images to judges that compare with them.
    """
    ctx = ScoreContext(spec, references)
    rows = []
    for scene_id in scenes or list(spec.scenes):
        scene = spec.scenes[scene_id]
        for seed in seeds:
            for condition in CONDITIONS:
                shown = shown_concepts(scene, condition)
                if condition == "blank":
                    image = oracle.blank(scene, seed)
                else:
                    image = oracle.render(scene, [spec.concepts[c] for c in shown], seed)  # type: ignore[index]
                queries = scene_queries(ctx, scene, image.size)
                theirs = list(reference.judge(image, [q for _, q in queries]))
                mine = list(candidate.judge(image, [q for _, q in queries]))
                for (region, query), ref, cand in zip(queries, theirs, mine, strict=True):
                    if ref is None or cand is None:
                        continue
                    rows.append(BoxComparison(
                        condition, scene.id, seed, region, query.concept.id, shown[region],
                        _verdict_pair(ref, query), _verdict_pair(cand, query), ref.reading, cand.reading,
                    ))
    return JudgeValidation(reference.ref, candidate.ref, tuple(rows))
