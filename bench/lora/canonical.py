"""The one in-memory form every LoRA file format converts into.

Keys are module paths inside the loaded models, so ``unet.get_submodule(key)`` and
``text_encoder.get_submodule(key)`` find the layer a delta belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LoraDelta:
    """A low-rank update ``W' = W + scale * up @ down`` of one linear (or 1x1 conv) layer."""

    down: torch.Tensor  # [rank, in_features]
    up: torch.Tensor  # [out_features, rank]
    scale: float = 1.0

    @property
    def rank(self) -> int:
        """The rank of the update."""
        return int(self.down.shape[0])

    def weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The dense ``[out, in]`` weight update, scale included."""
        dtype = dtype or self.up.dtype
        return (self.up.to(torch.float32) @ self.down.to(torch.float32)).mul(self.scale).to(dtype)


@dataclass(frozen=True)
class ConceptLora:
    """One concept's LoRA: UNet and text-encoder deltas plus (layer-wise) token embeddings.

    ``token_embeddings`` maps each concept token (``'<catA1>'``) to a ``[layers, dim]`` tensor:
    16 rows for ED-LoRA's layer-wise embeddings in down -> mid -> up cross-attention order, or one
    row for a plain textual-inversion embedding.
    """

    unet: Mapping[str, LoraDelta] = field(default_factory=dict)
    text_encoder: Mapping[str, LoraDelta] = field(default_factory=dict)
    token_embeddings: Mapping[str, torch.Tensor] = field(default_factory=dict)
    source: str = ""
    format: str = ""
