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

    def remove(self) -> None:
        """Forget the state once the stage has written its result (a later run starts fresh); the folder goes too
        unless it holds more (the base stage's rendered training data)."""
        self.path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


class ResumableLoop:
    """The resumable state of a stage's training loop, saved through a :class:`Checkpoint`.

    ``parts`` are objects with ``state_dict``/``load_state_dict`` (modules, optimizers), ``tensors`` are
    parameters trained in place, and ``generator`` and torch's global generator draw the loop's random
    numbers. :meth:`resume` restores a saved state and says where to continue; :meth:`after_step` saves
    every ``every`` steps (not after the last); :meth:`finish` forgets the state once the stage has written
    its result. A stage stopped and started again with the same arguments so ends with the weights of an
    uninterrupted run.
    """

    def __init__(self, stage: str, folder: Path, log: TrainLog, generator: torch.Generator, *,
                 parts: dict[str, Any] | None = None, tensors: dict[str, torch.Tensor] | None = None,
                 every: int = 100, started: float | None = None):
        self.stage, self.log, self.generator, self.every = stage, log, generator, every
        self.parts, self.tensors = parts or {}, tensors or {}
        self.checkpoint = Checkpoint(folder)
        self.started = time.time() if started is None else started  # the wall clock of this session's start
        self.extra: dict[str, Any] = {}

    def resume(self) -> int:
        """Restore the saved state, if any; the step to start from (0 for a fresh start)."""
        saved = self.checkpoint.load()
        if saved is None:
            return 0
        for name, part in self.parts.items():
            part.load_state_dict(saved["parts"][name])
        with torch.no_grad():
            for name, tensor in self.tensors.items():
                tensor.copy_(saved["tensors"][name])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        self.extra = dict(saved["extra"])
        self.started = time.time() - float(saved["seconds"])
        self.log.event(f"{self.stage}-resume", step=int(saved["step"]), seconds=round(float(saved["seconds"]), 1))
        return int(saved["step"])

    def seconds(self) -> float:
        """Wall time of the stage, summed over every session."""
        return time.time() - self.started

    def after_step(self, done: int, total: int, **extra: Any) -> None:
        """Save when ``done`` steps of ``total`` are a multiple of ``every`` (``extra``: e.g. a running loss)."""
        if done % self.every or done >= total:
            return
        self.checkpoint.save({
            "parts": {name: part.state_dict() for name, part in self.parts.items()},
            "tensors": {name: tensor.detach().clone() for name, tensor in self.tensors.items()},
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(), "step": done,
            "extra": extra, "seconds": self.seconds(),
        })

    def finish(self) -> None:
        """Forget the saved state (the stage has written its result)."""
        self.checkpoint.remove()


def diffusion_target(schedule, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict under ``schedule``: the noise, or the velocity for v-prediction."""
    if schedule.config.prediction_type == "v_prediction":
        return schedule.get_velocity(latents, noise, t)
    return noise


def loss_weights(schedule, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """Per-sample loss weights that cap low-noise steps at SNR ``gamma`` (min-SNR) and keep high-noise ones at 1.

    For epsilon prediction this is min-SNR-gamma, ``min(snr, gamma) / snr``. For v-prediction the same cap is
    ``min(snr + 1, gamma + 1) / (snr + 1)``: the v loss at high noise is an x0 loss, and at zero SNR (the last
    step of a zero-terminal-SNR schedule) it is the whole of what the prompt must decide, so it keeps weight 1.
    """
    alphas = schedule.alphas_cumprod[t]
    snr = alphas / (1 - alphas)
    if schedule.config.prediction_type == "v_prediction":
        return (snr + 1).clamp(max=gamma + 1) / (snr + 1)
    return snr.clamp(max=gamma) / snr
