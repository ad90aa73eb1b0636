"""The score formulas, on L2-normalised embeddings: nothing here loads a model or an image."""

from __future__ import annotations

import torch

PAIRINGS = ("all_pairs", "first_ref")


def rescale(cos: torch.Tensor, scale: float, clip0: bool) -> torch.Tensor:
    """``scale * max(cos, 0)`` when ``clip0``, else ``scale * cos``."""
    return scale * (cos.clamp(min=0.0) if clip0 else cos)


def image_alignment(
    crops: torch.Tensor, refs: torch.Tensor, pairing: str, scale: float = 1.0, clip0: bool = False
) -> torch.Tensor:
    """One value per crop ``[N]`` against reference embeddings ``[R, D]`` (in the cache's sorted order).

    ``all_pairs`` averages the rescaled similarity over every reference; ``first_ref`` uses only the
    first reference, which is what the official Mix-of-Show / LoRA-Composer script ends up computing.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing: expected one of {list(PAIRINGS)} (got {pairing!r})")
    if refs.shape[0] == 0:
        raise ValueError("image_alignment: expected at least one reference embedding")
    sims = rescale(crops @ refs.T, scale, clip0)
    return sims[:, 0] if pairing == "first_ref" else sims.mean(dim=1)


def text_alignment(images: torch.Tensor, texts: torch.Tensor, scale: float = 1.0, clip0: bool = False) -> torch.Tensor:
    """Paired image/text values ``[N]``: row i of ``images`` against row i of ``texts``."""
    return rescale((images * texts).sum(dim=-1), scale, clip0)
