"""A detector for presence and a similarity judge for identity, as one box judge.

Per box: ``present`` is the presence judge's; ``identity`` is the identity judge's when the box is
present, else None. So confusion = the concept's class is detected in the box, but another concept of
the scene resembles the box more than the concept itself; an absent box counts as vanished only.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from metrics.box_judge import BoxJudge, BoxQuery, BoxVerdict


class CombinedJudge:
    """``presence`` answers "is it there", ``identity`` answers "which concept is it" (on present boxes)."""

    def __init__(self, presence: BoxJudge, identity: BoxJudge):
        self.presence, self.identity = presence, identity
        self.ref = f"presence {presence.ref} + identity {identity.ref}"
        self.weights = f"presence {presence.weights} + identity {identity.weights}"
        self.preprocess = f"presence: {presence.preprocess}; identity: {identity.preprocess}"
        self.crop = f"presence: {presence.crop}; identity: {identity.crop}"
        self.presence_rule = presence.presence_rule
        self.identity_rule = (f"when present: {identity.identity_rule}; a box where the concept is not present "
                              "shows no concept")

    def judge(self, image: Image.Image, queries: Sequence[BoxQuery]) -> list[BoxVerdict | None]:
        """Both judges on every box; identity kept only where the presence judge finds the concept."""
        present = list(self.presence.judge(image, queries))
        named = list(self.identity.judge(image, queries))
        out: list[BoxVerdict | None] = []
        for p, i in zip(present, named, strict=True):
            if p is None or i is None:
                out.append(None)
                continue
            identity = i.identity if p.present else None
            out.append(BoxVerdict(p.present, identity, f"{p.reading}; {i.reading}", {**p.details, **i.details}))
        return out
