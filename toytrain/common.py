"""What every toy-world training script shares: seeding, the learning-rate schedule, a JSON log."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``floor * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class TrainLog:
    """Appends one JSON line per event to ``<dir>/training.jsonl`` and echoes it."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "training.jsonl"

    def event(self, stage: str, **values: Any) -> None:
        """Record ``values`` under ``stage`` with a timestamp."""
        line = json.dumps({"stage": stage, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **values})
        print(line, flush=True)
        with self.path.open("a") as handle:
            handle.write(line + "\n")


def checkpoint_dir(stage: str) -> Path:
    """Where a stage keeps its resumable state: ``$LCBENCH_CACHE/toyworld-checkpoints/<stage>``."""
    from bench.cache import default_cache_dir

    return default_cache_dir() / "toyworld-checkpoints" / stage


class Checkpoint:
    """A stage's resumable state (``state.pt``: module and optimizer state dicts, step, RNG, wall time).

    Saved atomically every few steps; a stopped run started again with the same arguments continues
    from the last save, and the wall time it reports is summed over all sessions.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / "state.pt"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when the stage starts fresh."""
        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)
