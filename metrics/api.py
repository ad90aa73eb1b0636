"""What a metric plugin is: a named factory with defaults, and the conventions every score row carries."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from PIL import Image

from bench.spec import Scene
from metrics.box_judge import BoxJudge, BoxQuery, BoxVerdict, ConceptCard, confused, vanished

if TYPE_CHECKING:
    from metrics.context import ScoreContext

__all__ = [
    "CONVENTION_FIELDS", "BoxJudge", "BoxQuery", "BoxVerdict", "ConceptCard", "Metric", "MetricSpec", "ScoreItem",
    "confused", "vanished",
]

# The convention fields every score row carries and every report header prints (anchors.md §1.2).
CONVENTION_FIELDS = (
    "model",
    "weights",
    "preprocess",
    "crop_mode",
    "scale",
    "clip0",
    "prefix",
    "pairing",
    "text",
)


@dataclass(frozen=True)
class ScoreItem:
    """One generated image to score: where it came from and the scene it shows."""

    method: str
    scene: Scene
    index: int
    seed: int
    image: Image.Image


class Metric(Protocol):
    """A ready metric: parameters fixed, models resolved through the score context."""

    # "I" (image alignment), "T" (text alignment), "V" / "C" (vanishing / confusion rate): its Table 1 column;
    # "A": agreement of two box judges (a check of a judge, not a score of the methods)
    kind: str

    def conventions(self, ctx: ScoreContext) -> dict[str, Any]:
        """The values of :data:`CONVENTION_FIELDS` (and any more) that define this score."""
        ...

    def score(self, items: Sequence[ScoreItem], ctx: ScoreContext) -> list[list[dict[str, Any]]]:
        """Score a batch of images; for each item, one row per region/concept.

        A row holds at least ``concept``, ``region`` (index, -1 for the whole image), ``value``.
        """
        ...


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: name, defaults, how to make it (``create(params)``) and the models it needs.

    ``needs`` names the score context's resources (``clip``, ``dino``, ``box_judge``, ``dataset_judge``) the
    metric reads;
    ``bench score`` loads them before the first image, so a missing model fails before any work.
    ``higher_is_better`` gives the metric's direction (normalized columns and "best" marks follow it);
    ``percent`` says the values are 0/1 rates that tables show in percent; ``decimals`` is how many
    decimals tables print.
    """

    name: str
    description: str
    create: Callable[[Mapping[str, Any]], Metric]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    higher_is_better: bool = True
    percent: bool = False
    decimals: int = 3
    calibrated: bool = True  # False: a check of a scoring model, not a score of images (no calibration check)

    def resolve_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults merged with overrides; an unknown parameter is an error naming the expected keys."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"metric '{self.name}': unknown parameter '{unknown[0]}'; expected one of {sorted(self.defaults)}"
            )
        return {**self.defaults, **overrides}

    def key(self, params: Mapping[str, Any]) -> str:
        """The score folder name: the metric name, plus every parameter that differs from its default."""
        changed = [f"{k}={params[k]}" for k in sorted(params) if self.defaults.get(k) != params[k]]
        return ",".join([self.name, *changed])
