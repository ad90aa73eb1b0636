"""Metrics: CLIP-I, CLIP-T (with named compatibility variants) and DINO, scored into ``RUN/scores``."""

from metrics.api import MetricSpec, ScoreItem
from metrics.scoring import DEFAULT_METRICS, ScoreError, score_run

__all__ = ["DEFAULT_METRICS", "MetricSpec", "ScoreError", "ScoreItem", "score_run"]
