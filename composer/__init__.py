"""LoRA-Composer (arXiv 2403.11627) on current diffusers, built on the region mechanism (:mod:`regions`).

Modules, in the order data flows through them:

- :mod:`composer.config`: every knob with the official defaults, and the deviations from upstream;
- :mod:`composer.layout`: the text stage (global and region prompts, layer-wise, once per image) and
  the layer caches with each concept's low-rank deltas as the region source;
- :mod:`composer.losses`, :mod:`composer.reinit`: guidance losses and latent re-initialization;
- :mod:`composer.guidance`: the refinement loop on top of :class:`regions.sampler.RegionSampler`;
- :mod:`composer.method`, :mod:`composer.plugin`: the bench method and its registration.
"""
