"""Concept vanishing and concept confusion per box, over any box judge; and the agreement of two judges.

For each region of a scored image whose concept is not a background, the box judge
(:class:`metrics.api.BoxJudge`) gets the box, the concept and the scene's other concepts, and answers
whether the concept is present and which of the scene's concepts the box shows. Then, per box:

- ``vanishing`` is 1 when the judge finds no object of the concept in the box (its presence rule), else 0;
- ``confusion`` is 1 when the judge says the box shows another concept of the same scene (its identity
  rule), else 0.

Both rules are the judge's and go, in words, into the scores' conventions. With the toy world's
classifier the rules are the toy definitions: present = the classifier reads the concept's shape and
colour (those it declares); confused = the box shows a shape or colour of another concept of the scene
that the box's concept does not share (an empty box confuses nothing). With a detector and a similarity
judge combined (:mod:`metrics.judges`): present = an object of the concept's class is detected in the
box; confused = present, and another concept's reference images are more similar to the box than the
concept's own. Regions whose concept is a background, or that the judge cannot check (a toy concept
without shape or colour), get no row.

``judge_agreement`` scores, per box, whether the run's judge (``bench score --judge``) and the dataset's
own judge (``evaluation.classifier``) give the same vanishing and confusion verdicts: a check of a
judge (kind ``A``), not a score of the methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.boxes import to_xyxy_pixels
from bench.spec import DatasetSpec, Scene
from metrics.api import BoxJudge, BoxQuery, BoxVerdict, ConceptCard, ScoreItem, confused, vanished
from metrics.context import ScoreContext

MODES = ("vanishing", "confusion")
VANISHING_RULE = "1 per box when the judge finds no object of the concept in it, else 0"
CONFUSION_RULE = "1 per box when the judge says it shows another concept of the scene, else 0"


def definition(mode: str, judge: BoxJudge) -> str:
    """The per-box definition of a rate with ``judge``'s rule in words: the ``pairing`` convention."""
    if mode == "vanishing":
        return f"{VANISHING_RULE}; present: {judge.presence_rule}"
    return f"{CONFUSION_RULE}; identity: {judge.identity_rule}"


def concept_card(ctx: ScoreContext, concept_id: str) -> ConceptCard:
    """The judge's view of a spec concept: id, class name, attributes, and its reference files on demand."""
    concept = ctx.concept(concept_id)
    return ConceptCard(concept.id, concept.class_name, dict(concept.attributes),
                       lambda: [ref for ref, _ in ctx.sorted_references(concept_id)])


def scene_queries(ctx: ScoreContext, scene: Scene, size: tuple[int, int]) -> list[tuple[int, BoxQuery]]:
    """(region index, query) for each region of ``scene`` whose concept is not a background."""
    spec: DatasetSpec = ctx.spec
    cards = {cid: concept_card(ctx, cid) for cid in spec.scene_concepts(scene) if not spec.concepts[cid].background}
    members = tuple(cards.values())
    return [
        (i, BoxQuery(region.box, to_xyxy_pixels(region.box, *size), cards[region.concept], members))
        for i, region in enumerate(scene.regions)
        if region.concept in cards
    ]


def verdicts(
    ctx: ScoreContext, judge: BoxJudge, item: ScoreItem, name: str = "box_judge"
) -> list[tuple[int, BoxQuery, BoxVerdict]]:
    """(region, query, verdict) of every box ``judge`` checks in ``item``; computed once per image and judge."""

    def compute() -> list[tuple[int, BoxQuery, BoxVerdict]]:
        queries = scene_queries(ctx, item.scene, item.image.size)
        answers = list(judge.judge(item.image, [q for _, q in queries])) if queries else []
        if len(answers) != len(queries):
            raise RuntimeError(f"box judge '{judge.ref}': {len(answers)} verdicts for {len(queries)} boxes")
        return [(i, q, v) for (i, q), v in zip(queries, answers, strict=True) if v is not None]

    return ctx.memo((name, item.method, item.scene.id, item.index, item.seed), compute)


def rate_row(mode: str, region: int, query: BoxQuery, verdict: BoxVerdict) -> dict[str, Any]:
    """The score row of one box: concept, region, 0/1 value, what the judge saw, and its details."""
    value = vanished(verdict) if mode == "vanishing" else confused(verdict, query)
    return {"concept": query.concept.id, "region": region, "value": float(value), "predicted": verdict.reading,
            **dict(verdict.details)}


def judge_conventions(judge: BoxJudge) -> dict[str, Any]:
    """The convention fields that identify a judge (model, weights, preprocessing, crop)."""
    return {"model": judge.ref, "weights": judge.weights, "preprocess": judge.preprocess, "crop_mode": judge.crop}


class BoxConceptMetric:
    """``vanishing`` (kind ``V``) or ``confusion`` (kind ``C``): a 0/1 row per checked region of each image."""

    def __init__(self, name: str, mode: str):
        if mode not in MODES:
            raise ValueError(f"metric '{name}': mode: expected 'vanishing' or 'confusion' (got {mode!r})")
        self.name, self.mode = name, mode
        self.kind = "V" if mode == "vanishing" else "C"

    def conventions(self, ctx: ScoreContext) -> dict[str, Any]:
        """The judge and the per-box definition of this rate (in ``pairing``)."""
        judge: BoxJudge = ctx.resource("box_judge")
        return {
            **judge_conventions(judge),
            "scale": "n/a (0/1 per box; tables show the mean)",
            "clip0": "n/a",
            "prefix": None,
            "pairing": definition(self.mode, judge),
            "text": None,
        }

    def score(self, items: Sequence[ScoreItem], ctx: ScoreContext) -> list[list[dict[str, Any]]]:
        """One row per region the judge checks; backgrounds get none."""
        judge: BoxJudge = ctx.resource("box_judge")
        return [[rate_row(self.mode, i, q, v) for i, q, v in verdicts(ctx, judge, item)] for item in items]


class JudgeAgreement:
    """``judge_agreement`` (kind ``A``): 1 per box where the run's judge and the dataset's judge give the
    same vanishing and the same confusion verdict, else 0 (boxes both judges check)."""

    kind = "A"

    def __init__(self, name: str):
        self.name = name

    def conventions(self, ctx: ScoreContext) -> dict[str, Any]:
        """Both judges; the definition in ``pairing``."""
        if ctx.judge is None:
            raise ValueError(f"metric '{self.name}': compares `bench score --judge ...` with the dataset's "
                             "evaluation.classifier; expected a --judge")
        judge: BoxJudge = ctx.resource("box_judge")
        reference: BoxJudge = ctx.resource("dataset_judge")
        return {
            **judge_conventions(judge),
            "scale": "n/a (0/1 per box; tables show the mean)",
            "clip0": "n/a",
            "prefix": None,
            "pairing": (
                f"1 per box when this judge and the dataset's judge {reference.ref} ({reference.weights}) agree on "
                f"both vanishing and confusion, else 0. This judge: present: {judge.presence_rule}; identity: "
                f"{judge.identity_rule}. Dataset's judge: present: {reference.presence_rule}; identity: "
                f"{reference.identity_rule}"
            ),
            "text": None,
        }

    def score(self, items: Sequence[ScoreItem], ctx: ScoreContext) -> list[list[dict[str, Any]]]:
        """One row per box both judges check, with both readings."""
        judge: BoxJudge = ctx.resource("box_judge")
        reference: BoxJudge = ctx.resource("dataset_judge")
        out = []
        for item in items:
            theirs = {i: v for i, _, v in verdicts(ctx, reference, item, "dataset_judge")}
            rows = []
            for i, query, mine in verdicts(ctx, judge, item):
                if i not in theirs:
                    continue
                ref = theirs[i]
                same = (vanished(mine), confused(mine, query)) == (vanished(ref), confused(ref, query))
                rows.append({"concept": query.concept.id, "region": i, "value": float(same),
                             "predicted": mine.reading, "reference": ref.reading,
                             "verdicts": [_verdict_text(mine, query), _verdict_text(ref, query)]})
            out.append(rows)
        return out


def _verdict_text(verdict: BoxVerdict, query: BoxQuery) -> str:
    flags = [name for name, on in (("vanished", vanished(verdict)), ("confused", confused(verdict, query))) if on]
    return "+".join(flags) or "ok"
