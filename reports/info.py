"""What the tables need to know about each scored metric and each row: direction, decimals, random weights.

A metric key's facts come from its scores' ``conventions.json`` (written by ``bench score``) and, for how
tables print it, from the registered :class:`metrics.api.MetricSpec` of the same name. A metric scored with
a random-weight model (``bench.models.random_weights`` of the conventions' ``model``, of the model kind the
metric ``needs``) carries no signal; tables mark its columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.models import random_weights
from bench.plugins import plugin_manager, registered_metrics

RATE_KINDS = ("V", "C")
RANDOM_PREFIX = "builtin:random-"  # the random-weight world's built-ins (randomworld)
# A reference's kind (manifest "reference") in the order tables show them.
REFERENCE_ORDER = {"oracle": 0, "probe": 1, "floor": 2}
ORACLE = "ref-oracle"
SWAPPED = "ref-swapped"
FLOOR_BASE = "ref-floor-base"
FLOOR_BLANK = "ref-floor-blank"
NOISE = "ref-noise"


@dataclass(frozen=True)
class MetricInfo:
    """How one metric key reads and prints."""

    key: str
    name: str
    kind: str
    description: str
    higher_is_better: bool
    percent: bool
    decimals: int
    model: str | None
    random_model: bool
    calibrated: bool = True  # False: not held to the calibration check (see MetricSpec.calibrated)

    @property
    def arrow(self) -> str:
        """``↑`` when higher is better, else ``↓``."""
        return "↑" if self.higher_is_better else "↓"

    @property
    def scale(self) -> float:
        """The factor from stored values to printed values (100 for rates shown in percent)."""
        return 100.0 if self.percent else 1.0


def _random_scorer(conventions: Mapping[str, Any], needs: tuple[str, ...]) -> bool:
    model = conventions.get("model")
    if not isinstance(model, str):
        return False
    if str(conventions.get("weights") or "").startswith("random-init"):
        return True
    try:
        return any(random_weights(model, kind) for kind in needs or ("clip",))
    except Exception:  # noqa: BLE001 - a broken plugin must not stop a report; fall back on the built-in naming
        return model.startswith(RANDOM_PREFIX)


def metric_info(key: str, conventions: Mapping[str, Any], registry: Mapping[str, Any] | None = None) -> MetricInfo:
    """The facts of metric ``key`` from its conventions and its registered spec (defaults when unregistered)."""
    if registry is None:
        try:
            registry = registered_metrics(plugin_manager())
        except Exception:  # noqa: BLE001 - a broken plugin must not stop a report: print with the defaults
            registry = {}
    name = str(conventions.get("metric") or key.split(",")[0])
    kind = str(conventions.get("kind") or "")
    spec = registry.get(name)
    rate = kind in RATE_KINDS
    higher = conventions.get("higher_is_better")
    if higher is None:
        higher = spec.higher_is_better if spec is not None else not rate
    return MetricInfo(
        key=key,
        name=name,
        kind=kind,
        description=spec.description if spec is not None else "",
        higher_is_better=bool(higher),
        percent=spec.percent if spec is not None else rate,
        decimals=int(spec.decimals) if spec is not None else (1 if rate else 3),
        model=conventions.get("model"),
        random_model=_random_scorer(conventions, tuple(spec.needs) if spec is not None else ()),
        calibrated=bool(getattr(spec, "calibrated", True)),
    )


def reference_rank(kind: str | None) -> int:
    """Sort position of a row: methods (None) first, then oracle, probes, floors."""
    return -1 if kind is None else REFERENCE_ORDER.get(kind, len(REFERENCE_ORDER))
