"""Metrics: CLIP-I, CLIP-T (with named compatibility variants), DINO and the box-judge metrics
(vanishing, confusion), scored into ``RUN/scores`` (:func:`metrics.scoring.score_run`).

Registered through the bench's hooks by :mod:`metrics.plugin`; this package imports nothing at start-up.
"""
