"""Cones2 (Cones-V2) re-implemented on diffusers: residual token embeddings and layout-guided attention.

The names below are imported from their modules on first use, so importing a light submodule of this
package (``baselines.cones2.command``, which every ``bench`` command loads) imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Cones2AttnProcessor": "attention",
    "Cones2State": "attention",
    "layout_bias": "attention",
    "Subject": "layout",
    "build_prompt": "layout",
    "layout_weights": "layout",
    "Cones2Method": "method",
    "method_spec": "method",
    "load_residual": "residual",
    "save_residual": "residual",
    "train_residual": "residual",
    "cones2_sample": "sampler",
    "euler_update": "sampler",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Import ``name`` from the submodule that defines it (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'baselines.cones2' has no attribute '{name}'")
    return getattr(importlib.import_module(f"baselines.cones2.{_HOMES[name]}"), name)
