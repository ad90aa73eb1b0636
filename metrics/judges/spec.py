"""``bench score --judge TEXT``: which box judge scores vanishing and confusion, built through the front door.

``TEXT`` is either a box-judge reference, as a spec's ``evaluation.classifier`` takes it
(``builtin:toy-classifier``, a ``.safetensors`` file of the toy classifier), or comma-separated
``key=value`` parts:

=====================  ========================================================================
``detector=KIND:DIR``  presence by detection: ``owlv2`` or ``grounding-dino``, the model and processor
                       folder (``save_pretrained`` layout)
``identity=dino:DIR``  identity by DINOv2 similarity to the references (a local ``Dinov2Model`` folder);
``identity=dino``      ... with the scoring run's DINO (``--dino-model``)
``identity=clip``      identity by CLIP similarity, with the scoring run's CLIP (``--clip-model`` and
                       ``--clip-weights``, else the dataset's)
``threshold=F``        detection score threshold (default 0.1 for OWLv2, 0.3 for Grounding DINO)
``overlap=RULE:F``     ``inside:0.5`` (default) or ``iou:0.5``: when a detection counts for a box
``query=TEMPLATE``     detector query with ``{}`` for the class name
``margin=F``           identity: another concept wins only by more than F (default 0)
``min_similarity=F``   identity: below F the box shows none of the scene's concepts (default: unset)
``crop=MODE``          identity crop: ``center_crop`` (default) or ``pad_square``
=====================  ========================================================================

With a detector and an identity, they are combined (:class:`metrics.judges.combined.CombinedJudge`).
Example: ``detector=owlv2:/models/owlv2-base-patch16-ensemble,identity=dino:/models/dinov2-base``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.models import ModelError, create
from metrics.judges.detectors import DETECTORS, OVERLAP_RULES
from metrics.judges.similarity import IDENTITY_CROPS

IDENTITIES = ("dino", "clip")
DETECTOR_KEYS = ("threshold", "overlap", "query")
IDENTITY_KEYS = ("margin", "min_similarity", "crop")
KEYS = ("detector", "identity", *DETECTOR_KEYS, *IDENTITY_KEYS)


class JudgeSpecError(ValueError):
    """A ``--judge`` text that cannot be read; the message names the part and what was expected."""


@dataclass(frozen=True)
class JudgeSpec:
    """A parsed ``--judge``: either ``ref`` alone, or a detector and/or an identity with their settings."""

    ref: str | None = None
    detector: str | None = None
    detector_folder: str | None = None
    identity: str | None = None
    identity_folder: str | None = None
    threshold: float | None = None
    overlap_rule: str = "inside"
    min_overlap: float = 0.5
    query: str | None = None
    margin: float = 0.0
    min_similarity: float | None = None
    crop: str = "center_crop"


def _float(where: str, key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise JudgeSpecError(f"{where}: '{key}={value}': expected a number") from None


def parse_judge(text: str, where: str = "--judge") -> JudgeSpec:
    """Read a ``--judge`` text (see the module docstring)."""
    text = text.strip()
    if not text:
        raise JudgeSpecError(f"{where}: expected a judge, e.g. 'detector=owlv2:DIR,identity=dino:DIR'")
    if "=" not in text:
        return JudgeSpec(ref=text)
    parts: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in KEYS or not value:
            raise JudgeSpecError(f"{where}: part '{part}': expected KEY=VALUE with KEY one of {list(KEYS)}")
        if key in parts:
            raise JudgeSpecError(f"{where}: '{key}' given twice")
        parts[key] = value
    if "detector" not in parts and "identity" not in parts:
        raise JudgeSpecError(f"{where}: expected detector=KIND:DIR and/or identity=dino[:DIR]|clip")
    fields: dict[str, Any] = {}
    if "detector" in parts:
        kind, _, folder = parts["detector"].partition(":")
        if kind not in DETECTORS or not folder:
            raise JudgeSpecError(f"{where}: 'detector={parts['detector']}': expected KIND:DIR with KIND one of "
                                 f"{sorted(DETECTORS)} and DIR the model folder")
        fields.update(detector=kind, detector_folder=folder)
    else:
        stray = [k for k in DETECTOR_KEYS if k in parts]
        if stray:
            raise JudgeSpecError(f"{where}: '{stray[0]}' is a detector setting; expected detector=KIND:DIR with it")
    if "identity" in parts:
        kind, _, folder = parts["identity"].partition(":")
        if kind not in IDENTITIES or (kind == "clip" and folder):
            raise JudgeSpecError(f"{where}: 'identity={parts['identity']}': expected dino, dino:DIR or clip "
                                 "(clip uses --clip-model/--clip-weights)")
        fields.update(identity=kind, identity_folder=folder or None)
    else:
        stray = [k for k in IDENTITY_KEYS if k in parts]
        if stray:
            raise JudgeSpecError(f"{where}: '{stray[0]}' is an identity setting; expected identity=... with it")
    if "threshold" in parts:
        fields["threshold"] = _float(where, "threshold", parts["threshold"])
    if "overlap" in parts:
        rule, _, amount = parts["overlap"].partition(":")
        if rule not in OVERLAP_RULES or not amount:
            raise JudgeSpecError(f"{where}: 'overlap={parts['overlap']}': expected RULE:FRACTION with RULE one of "
                                 f"{list(OVERLAP_RULES)}, e.g. inside:0.5")
        fields.update(overlap_rule=rule, min_overlap=_float(where, "overlap", amount))
    if "query" in parts:
        fields["query"] = parts["query"]
    if "margin" in parts:
        fields["margin"] = _float(where, "margin", parts["margin"])
    if "min_similarity" in parts:
        fields["min_similarity"] = _float(where, "min_similarity", parts["min_similarity"])
    if "crop" in parts:
        if parts["crop"] not in IDENTITY_CROPS:
            raise JudgeSpecError(f"{where}: 'crop={parts['crop']}': expected one of {list(IDENTITY_CROPS)}")
        fields["crop"] = parts["crop"]
    return JudgeSpec(**fields)


def _embedder(spec: JudgeSpec, ctx: Any) -> Any:
    if spec.identity == "clip":
        return ctx.clip()
    if spec.identity_folder is None:
        return ctx.dino()
    from metrics.models import DinoEmbedder

    return DinoEmbedder(spec.identity_folder, device=ctx.device)


def build_judge(text: str, ctx: Any, where: str = "--judge") -> Any:
    """The box judge a ``--judge`` text names, its models made through :func:`bench.models.create`.

    ``ctx`` (a :class:`metrics.context.ScoreContext`) gives the device and the run's CLIP/DINO.
    """
    spec = parse_judge(text, where)
    if spec.ref is not None:
        return create(spec.ref, "box_judge", where=where)
    presence = identity = None
    if spec.detector is not None:
        presence = create(f"builtin:{spec.detector}", "box_judge", origin=where, weights=spec.detector_folder,
                          device=ctx.device, threshold=spec.threshold, overlap_rule=spec.overlap_rule,
                          min_overlap=spec.min_overlap, query=spec.query)
    if spec.identity is not None:
        identity = create(f"builtin:{spec.identity}-similarity", "box_judge", origin=where,
                          embedder=_embedder(spec, ctx), crop_mode=spec.crop, margin=spec.margin,
                          min_similarity=spec.min_similarity)
    if presence is not None and identity is not None:
        from metrics.judges.combined import CombinedJudge

        return CombinedJudge(presence, identity)
    judge = presence if presence is not None else identity
    if judge is None:  # parse_judge refuses this; kept for type checkers
        raise ModelError(f"{where}: no judge in {text!r}")
    return judge
