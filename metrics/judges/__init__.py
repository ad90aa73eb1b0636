"""Box judges for real images: open-vocabulary detectors (presence), reference similarity (identity), and
the two combined, behind the :class:`metrics.api.BoxJudge` protocol; ``--judge`` texts build them
(:mod:`metrics.judges.spec`)."""
