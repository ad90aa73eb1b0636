"""Cones2 (Cones-V2) re-implemented on diffusers: residual token embeddings and layout-guided attention."""

from baselines.cones2.attention import Cones2AttnProcessor, Cones2State, layout_bias
from baselines.cones2.layout import Subject, build_prompt, layout_weights
from baselines.cones2.method import Cones2Method, method_spec
from baselines.cones2.residual import load_residual, save_residual, train_residual
from baselines.cones2.sampler import cones2_sample, euler_update

__all__ = [
    "Cones2AttnProcessor",
    "Cones2Method",
    "Cones2State",
    "Subject",
    "build_prompt",
    "cones2_sample",
    "euler_update",
    "layout_bias",
    "layout_weights",
    "load_residual",
    "method_spec",
    "save_residual",
    "train_residual",
]
