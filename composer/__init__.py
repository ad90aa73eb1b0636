"""LoRA-Composer (arXiv 2403.11627) on current diffusers.

Modules, in the order data flows through them:

- :mod:`composer.layout`: the text stage (global and region prompts, layer-wise, once per image);
- :mod:`composer.caches`: per-layer keys/values, region ones from base weights + low-rank deltas;
- :mod:`composer.attention`: the controller and the self-/cross-attention processors;
- :mod:`composer.losses`, :mod:`composer.reinit`: guidance losses and latent re-initialization;
- :mod:`composer.adapter`: optional T2I-Adapter conditions with per-box weights;
- :mod:`composer.pipeline`: the sampling loop;
- :mod:`composer.method`, :mod:`composer.plugin`: the bench method and its registration.
"""
