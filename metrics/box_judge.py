"""The box-judge protocol: what the vanishing and confusion metrics ask about a box, and what a judge answers.

A leaf module (it imports only the core), re-exported by :mod:`metrics.api`, so judges of any plugin can
use it without importing the scoring machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from bench.boxes import Box


@dataclass(frozen=True)
class ConceptCard:
    """What a box judge may know of one concept of a scene: id, class name, attributes, reference images.

    ``attributes`` are the spec's (``shape``/``colour``/``texture`` in the toy world; empty elsewhere).
    ``reference_files`` lists the concept's reference images when called (sorted by file name); it is
    called only by judges that compare with references, so a dataset without them fails only there.
    """

    id: str
    class_name: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    reference_files: Callable[[], Sequence[Path]] | None = field(default=None, compare=False, repr=False)

    def references(self) -> list[Path]:
        """The concept's reference image files, sorted by file name; an error names the concept when none."""
        files = sorted(self.reference_files() if self.reference_files is not None else [], key=lambda p: p.name)
        if not files:
            raise FileNotFoundError(
                f"concept '{self.id}': expected reference images (the spec's concepts[{self.id}].references folder)"
            )
        return files


@dataclass(frozen=True)
class BoxQuery:
    """One question to a box judge: is ``concept`` in ``box`` of the image, and which of ``scene`` is there?

    ``box`` is the region's canonical box (normalized ``[x0, y0, x1, y1]``, origin top-left), ``pixels``
    the same box in pixels of the image at hand. ``scene`` holds the scene's concepts other than
    backgrounds, in region order without repeats (``concept`` among them).
    """

    box: Box
    pixels: tuple[int, int, int, int]
    concept: ConceptCard
    scene: tuple[ConceptCard, ...]

    @property
    def rivals(self) -> tuple[ConceptCard, ...]:
        """The scene's other concepts."""
        return tuple(c for c in self.scene if c.id != self.concept.id)


@dataclass(frozen=True)
class BoxVerdict:
    """A judge's answer for one box.

    ``present``: an object of the concept is in the box, as the judge's presence rule defines it.
    ``identity``: which of the scene's concepts the box shows (the box's own concept, another one) or
    None (none of them, or nothing there). ``reading`` says what the judge saw, in words; ``details``
    are numbers or words worth keeping in the score row (detection score, similarities, margin).
    """

    present: bool
    identity: str | None
    reading: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


def vanished(verdict: BoxVerdict) -> bool:
    """Concept vanishing of one box: the judge finds no object of the concept there."""
    return not verdict.present


def confused(verdict: BoxVerdict, query: BoxQuery) -> bool:
    """Concept confusion of one box: the judge says the box shows another concept of the scene."""
    return verdict.identity is not None and verdict.identity != query.concept.id and any(
        verdict.identity == c.id for c in query.rivals
    )


class BoxJudge(Protocol):
    """Answers, per box, "is an object of this concept there?" and "which of the scene's concepts is it?".

    The vanishing and confusion metrics take any such judge: the toy world's classifier, an
    open-vocabulary detector, a similarity judge, or a detector and a similarity judge combined.
    ``ref``/``weights`` identify it; ``preprocess``/``crop`` say what it sees; ``presence_rule`` and
    ``identity_rule`` say, in words, when it answers ``present`` and how it picks ``identity``: they go
    into the conventions of the scores (and so into every report).
    """

    ref: str
    weights: str
    preprocess: str
    crop: str
    presence_rule: str
    identity_rule: str

    def judge(self, image: Image.Image, queries: Sequence[BoxQuery]) -> Sequence[BoxVerdict | None]:
        """One verdict per query; None where the judge has nothing to check (that box gets no score row)."""
        ...
