"""Which images a study asks about, and in which order each participant sees them.

Every participant rates the same question set (so inter-rater agreement can be computed); only the
order differs. The set is balanced over concept counts first and over methods second, and the
methods of a concept count are shown on the same (scene, seed) slots so they are compared on equal
footing. Everything is drawn from seeded generators: the same inputs give the same study.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TypeVar

from lcbench.study.runs import ImageItem

T = TypeVar("T")


class StudyDesignError(ValueError):
    """The study cannot be built as asked; the message says which argument and what was expected."""


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _split_evenly(total: int, capacities: dict[int, int], rng: random.Random) -> dict[int, int]:
    """Share ``total`` among groups as evenly as their capacities allow."""
    quotas = dict.fromkeys(capacities, 0)
    left = total
    while left > 0:
        open_groups = [g for g in sorted(capacities) if quotas[g] < capacities[g]]
        if not open_groups:
            break
        share, extra = divmod(left, len(open_groups))
        bonus = set(rng.sample(open_groups, extra))
        for g in open_groups:
            give = min(share + (g in bonus), capacities[g] - quotas[g])
            quotas[g] += give
            left -= give
    return quotas


def usable_items(items: Sequence[ImageItem]) -> list[ImageItem]:
    """The images a study can ask about: finished, with a known scene."""
    return [it for it in items if it.ok and it.n_concepts is not None]


def select_questions(items: Sequence[ImageItem], count: int, seed: int) -> list[ImageItem]:
    """Pick ``count`` images balanced over concept counts, then over methods on shared (scene, seed) slots."""
    if count < 1:
        raise StudyDesignError(f"questions_per_participant: expected an integer >= 1 (got {count})")
    usable = usable_items(items)
    if len(usable) < count:
        raise StudyDesignError(
            f"questions_per_participant: expected at most {len(usable)} (the number of finished images "
            f"with a known scene in the chosen runs and methods), got {count}; pass --questions {len(usable)} "
            "(or fewer), or leave --questions out to ask about every image up to the default"
        )
    by_group: dict[int, dict[tuple[str, int], list[ImageItem]]] = defaultdict(lambda: defaultdict(list))
    for it in usable:
        assert it.n_concepts is not None
        by_group[it.n_concepts][(it.scene, it.index)].append(it)
    rng = _rng("select", seed)
    quotas = _split_evenly(count, {g: sum(map(len, slots.values())) for g, slots in by_group.items()}, rng)
    chosen: list[ImageItem] = []
    picked: Counter[str] = Counter()  # a partly used slot takes the methods picked least so far
    for group in sorted(by_group):
        slots = by_group[group]
        order = sorted(slots)
        rng.shuffle(order)
        left = quotas[group]
        for slot in order:
            if left <= 0:
                break
            methods = sorted(slots[slot], key=lambda it: (picked[it.label], it.label))[:left]
            chosen.extend(methods)
            picked.update(it.label for it in methods)
            left -= len(methods)
    return chosen


def participant_order(question_ids: Sequence[T], seed: int, participant: str) -> list[T]:
    """The question order of one participant: a shuffle seeded by the study seed and the participant code."""
    order = list(question_ids)
    _rng("order", seed, participant).shuffle(order)
    return order
