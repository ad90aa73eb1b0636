"""Captions for CLIP-T: concept tokens replaced by class names, with an optional prefix."""

from __future__ import annotations

from collections.abc import Iterable

from bench.spec import Concept, substitute_classes


def caption(prompt: str, concepts: Iterable[Concept], prefix: str = "") -> str:
    """The text CLIP-T scores: ``prefix`` followed by the prompt with class names substituted."""
    return prefix + substitute_classes(prompt, concepts)
