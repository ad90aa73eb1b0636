"""Captions for CLIP-T: concept tokens replaced by class names, with an optional prefix."""

from __future__ import annotations

import re
from collections.abc import Iterable

from bench.spec import Concept


def substitute_classes(prompt: str, concepts: Iterable[Concept]) -> str:
    """Replace each concept's token string (e.g. ``'<catA1> <catA2>'``) by its class name.

    The whole token sequence becomes one class word; a token of the concept that appears alone is
    replaced by the class word too. Runs of whitespace are collapsed.
    """
    text = prompt
    for concept in concepts:
        tokens = concept.token_list
        sequence = r"\s+".join(re.escape(t) for t in tokens)
        text = re.sub(sequence, concept.class_name, text)
        for token in tokens:
            text = text.replace(token, concept.class_name)
    return " ".join(text.split())


def caption(prompt: str, concepts: Iterable[Concept], prefix: str = "") -> str:
    """The text CLIP-T scores: ``prefix`` followed by the prompt with class names substituted."""
    return prefix + substitute_classes(prompt, concepts)
