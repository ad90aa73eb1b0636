"""Metrics: CLIP-I, CLIP-T (with named compatibility variants), DINO and the box-classifier metrics
(vanishing, confusion), scored into ``RUN/scores``."""

from metrics.api import MetricSpec, ScoreItem
from metrics.scoring import DEFAULT_METRICS, ScoreError, default_metrics, score_run

__all__ = ["DEFAULT_METRICS", "MetricSpec", "ScoreError", "ScoreItem", "default_metrics", "score_run"]
