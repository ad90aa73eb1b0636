"""Seeds: derived deterministically from (scene, seed index); noise is drawn on the CPU."""

from __future__ import annotations

import random

import torch

from bench.spec import Scene


def scene_seeds(scene: Scene, count: int, scheme: str = "paper") -> list[int]:
    """The seeds of a scene.

    ``paper``: the official background-generation scheme, ``random.seed(scene.seed)`` then
    ``randint(1, 20000)`` drawn ``count`` times (upstream ``gen_basemodel_bg.py``).
    ``offset``: ``scene.seed + index``; index 0 is the seed of the paper's script.
    """
    if scheme == "paper":
        rng = random.Random(scene.seed)
        return [rng.randint(1, 20000) for _ in range(count)]
    if scheme == "offset":
        return [scene.seed + i for i in range(count)]
    raise ValueError(f"unknown seed scheme {scheme!r}; expected 'paper' or 'offset'")


def initial_noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Initial latent noise for a seed, drawn on the CPU so a seed means the same noise on any device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(dtype)
