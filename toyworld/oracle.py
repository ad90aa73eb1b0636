"""The toy world's oracle: its own perfect render of a scene (the calibration's ``ref-oracle``).

Each region's concept is drawn upright in its box, as large as the box allows, with the world's
colour jitter drawn from the seed, on the background the scene's prompt names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from bench.boxes import to_xyxy_pixels
from bench.spec import Concept, Scene
from toyworld.world import BACKGROUNDS, SIZE, ToyObject, background_phrase, jittered_colour, render

FILL = 0.9  # the object's radius as a share of half the box's shorter side


def scene_background(scene: Scene) -> str:
    """The background the scene's global prompt names ('on a beach', 'at night', ...); white if none."""
    for background in BACKGROUNDS:
        if background_phrase(background) in scene.prompt:
            return background
    return "white"


class ToyOracle:
    """Renders scenes of the toy world (``render``) and their empty backgrounds (``blank``)."""

    def render(self, scene: Scene, concepts: Sequence[Concept], seed: int) -> Image.Image:
        """Each region's concept (``concepts[i]`` in region ``i``'s box) drawn on the scene's background."""
        rng = np.random.default_rng(seed)
        objects = []
        for region, concept in zip(scene.regions, concepts, strict=True):
            attributes = concept.attributes
            x0, y0, x1, y1 = to_xyxy_pixels(region.box, SIZE, SIZE)
            radius = FILL * min(x1 - x0, y1 - y0) / 2
            colour = attributes["colour"]
            objects.append(ToyObject(attributes["shape"], colour, attributes.get("texture", "solid"), (x0 + x1) / 2,
                                     (y0 + y1) / 2, radius, 0.0, jittered_colour(rng, colour)))
        return self._sized(render(objects, scene_background(scene)), scene)

    def blank(self, scene: Scene, seed: int) -> Image.Image:
        """The scene's background without any object."""
        return self._sized(render([], scene_background(scene)), scene)

    @staticmethod
    def _sized(image: Image.Image, scene: Scene) -> Image.Image:
        return image if image.size == (scene.width, scene.height) else image.resize((scene.width, scene.height))
