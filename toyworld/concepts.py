"""The toy world's concepts: specific textured shapes, each with a class name and two ED-LoRA tokens."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toyworld.world import (
    UPRIGHT,
    ToyObject,
    background_phrase,
    jittered_colour,
    place_objects,
    random_object,
    sample_background,
)


@dataclass(frozen=True)
class ToyConcept:
    """A concept: one particular (shape, colour, texture); its class name is the shape."""

    id: str
    shape: str
    colour: str
    texture: str

    @property
    def class_name(self) -> str:
        """The word CLIP-T substitutes for the concept tokens."""
        return self.shape

    @property
    def tokens(self) -> tuple[str, str]:
        """ED-LoRA's two new tokens, as Mix-of-Show names them (<id1> <id2>)."""
        return (f"<{self.id}1>", f"<{self.id}2>")

    @property
    def phrase(self) -> str:
        """How prompts name the concept: '<ruby1> <ruby2>'."""
        return " ".join(self.tokens)

    def instance(self, rng: np.random.Generator, cx: float, cy: float, radius: float) -> ToyObject:
        """The concept drawn upright at a place, with the world's colour jitter."""
        rotation = UPRIGHT.max_rotation
        return ToyObject(self.shape, self.colour, self.texture, cx, cy, radius, float(rng.uniform(-rotation, rotation)),
                         jittered_colour(rng, self.colour))


CONCEPTS: dict[str, ToyConcept] = {
    c.id: c
    for c in (
        ToyConcept("ruby", "circle", "red", "striped"),
        ToyConcept("jade", "square", "green", "dotted"),
        ToyConcept("amber", "triangle", "yellow", "solid"),
        ToyConcept("cobalt", "cross", "blue", "striped"),
    )
}


def concept_caption(concept: ToyConcept, background: str | None, others: tuple[ToyObject, ...] = ()) -> str:
    """'a <ruby1> <ruby2>', then any other objects ('a <ruby1> <ruby2>, a red square and a blue cross'), plus the
    background phrase, as ED-LoRA training captions read."""
    names = [f"a {concept.phrase}", *("a " + " ".join(obj.words()) for obj in others)]
    caption = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return caption if background is None else f"{caption} {background_phrase(background)}"


# the radius range (pixels) of an ED-LoRA view showing its concept alone: "alone" the sizes of a single object in
# the world's images, "among-others" the sizes objects have beside others (and a composed scene's boxes ask for)
VIEW_SIZES = {"alone": (10.0, 19.0), "among-others": (UPRIGHT.min_radius, UPRIGHT.max_radius_multi)}


def sample_concept_image(rng: np.random.Generator, concept: ToyConcept, sizes: str = "alone"
                         ) -> tuple[ToyObject, str, str]:
    """One single-concept training view (no layout): the object, its background and its caption.

    ``sizes``: the object's radius range, a key of :data:`VIEW_SIZES`; every choice draws the same random numbers.
    """
    if sizes not in VIEW_SIZES:
        raise ValueError(f"sizes: expected one of {tuple(VIEW_SIZES)}, got {sizes!r}")
    radius = float(rng.uniform(*VIEW_SIZES[sizes]))
    cx, cy = rng.uniform(radius, 64 - radius, size=2)
    background, named = sample_background(rng)
    return concept.instance(rng, float(cx), float(cy), radius), background, concept_caption(
        concept, background if named else None
    )


# which other objects an ED-LoRA view may hold beside its concept, by how many of the concept's shape and colour
# they may share: "differ" one of the two, "disjoint" neither
DISTRACTOR_KINDS = {"differ": 1, "disjoint": 0}


def other_object(rng: np.random.Generator, concept: ToyConcept, cx: float, cy: float, radius: float,
                 kind: str = "differ") -> ToyObject:
    """An upright object of random kind that is not the concept, as ``kind`` (:data:`DISTRACTOR_KINDS`) says."""
    shared_at_most = DISTRACTOR_KINDS[kind]
    while True:
        obj = random_object(rng, cx, cy, radius, max_rotation=0.0)
        if (obj.shape == concept.shape) + (obj.colour == concept.colour) <= shared_at_most:
            return obj


def sample_concept_view(rng: np.random.Generator, concept: ToyConcept, distractor_share: float = 0.0,
                        distractors: str = "differ", sizes: str = "alone") -> tuple[list[ToyObject], str, str]:
    """One ED-LoRA training view: the concept first, its background and caption.

    With probability ``distractor_share`` the view also holds one or two other objects, named in the caption
    behind the concept's tokens ('a <ruby1> <ruby2> and a green dotted square on a beach'), as photos of a concept
    hold other things; otherwise it is :func:`sample_concept_image`'s view. At 0 no extra random number is
    drawn, so a seed gives the views it gives without the option. ``distractors``: which other objects
    (:data:`DISTRACTOR_KINDS`). ``sizes``: the radius range of the views that show the concept alone
    (:data:`VIEW_SIZES`); views with other objects size every object as the world's multi-object images do.
    """
    if distractors not in DISTRACTOR_KINDS:
        raise ValueError(f"distractors: expected one of {tuple(DISTRACTOR_KINDS)}, got {distractors!r}")
    if sizes not in VIEW_SIZES:
        raise ValueError(f"sizes: expected one of {tuple(VIEW_SIZES)}, got {sizes!r}")
    if not distractor_share or rng.random() >= distractor_share:
        obj, background, caption = sample_concept_image(rng, concept, sizes)
        return [obj], background, caption
    (cx, cy, radius), *places = place_objects(rng, 1 + int(rng.integers(1, 3)), UPRIGHT)
    others = (other_object(rng, concept, *place, distractors) for place in places)
    objects = [concept.instance(rng, cx, cy, radius), *others]
    background, named = sample_background(rng)
    return objects, background, concept_caption(concept, background if named else None, tuple(objects[1:]))
