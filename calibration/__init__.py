"""Calibration: reference images beside the methods, so every score can be read against a right and a wrong answer.

For each scene and seed of a run, ``bench score`` (through ``bench calibrate``) makes:

- ``ref-oracle``: a perfect image: the dataset's oracle renderer (``evaluation.oracle``, e.g. the toy
  world's own render of the scene), or else each concept's reference image, cut out with its mask where
  the dataset has one, pasted into its box over the base-model floor;
- ``ref-swapped``: the oracle with the first two regions' concepts exchanged (a right-looking image with
  the wrong concept in each box);
- ``ref-floor-blank``: a blank image in the scene's background colour;
- ``ref-floor-base``: the base model sampled on the global prompt with concept tokens replaced by class
  words, without any concept LoRA;
- ``ref-noise``: uniform noise.

They are methods registered through the bench's hooks (``MethodSpec.reference`` says which kind), made
by the runner and scored like any method; reports show them apart and use them to normalize and to
check that each metric separates right from wrong.
"""
