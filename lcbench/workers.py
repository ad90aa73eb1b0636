"""``bench run --workers N``: one run split over N local worker processes.

The parent starts N copies of its own command line, as ranks 0 .. N-1 of one launch (the RANK and
WORLD_SIZE variables that ``accelerate launch`` or ``torchrun`` would set, and a launch id of its own), and
waits for them (:func:`lcbench.processes.run_children`). Each worker generates its share of the plan
(:mod:`bench.runner`); rank 0 alone shows a progress bar. On the CPU each worker gets an equal part of the
cores as its thread count, since small models run faster as several one-thread processes than as one
process with several threads; on CUDA each worker takes its own GPU.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping, Sequence

from bench.runner import LAUNCH_VARIABLE
from lcbench.processes import Child, run_children

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class WorkersError(ValueError):
    """An unusable --workers value."""


def usable_cpus() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_count(value: str, device: str) -> int:
    """The number of workers ``--workers value`` asks for on ``device``: a positive integer, or ``auto``
    (one per usable CPU core on the CPU, one per visible GPU on CUDA)."""
    if value == "auto":
        if device.startswith("cuda"):
            import torch

            return max(1, torch.cuda.device_count())
        return usable_cpus()
    if value.isascii() and value.isdigit() and int(value) >= 1:
        return int(value)
    raise WorkersError(f"--workers: expected a positive integer or 'auto' (got {value!r})")


def is_worker(environ: Mapping[str, str] = os.environ) -> bool:
    """True in a worker that ``bench run --workers`` started."""
    return bool(environ.get(LAUNCH_VARIABLE))


def worker_rank(environ: Mapping[str, str] = os.environ) -> int:
    """This worker's rank (0 outside a ``bench run --workers`` launch)."""
    return int(environ.get("RANK", "0")) if is_worker(environ) else 0


def worker_environments(
    workers: int, device: str, environ: Mapping[str, str] = os.environ, cpus: int | None = None
) -> list[dict[str, str]]:
    """The environment of each worker: its rank in a launch of ``workers``, a shared launch id and, on the
    CPU, its thread count (unless OMP_NUM_THREADS is set already, and not empty)."""
    taken = [name for name in RANK_VARIABLES if name in environ]
    if taken:
        raise WorkersError(
            f"--workers {workers}: expected no launcher variables (got {', '.join(taken)} set): under "
            "`accelerate launch` or `torchrun`, the launcher starts the processes; pass --workers 1"
        )
    launch = uuid.uuid4().hex
    threads = max(1, (cpus or usable_cpus()) // workers)
    environments = []
    for rank in range(workers):
        env = dict(environ, RANK=str(rank), WORLD_SIZE=str(workers), **{LAUNCH_VARIABLE: launch})
        if not device.startswith("cuda") and not env.get("OMP_NUM_THREADS"):
            env["OMP_NUM_THREADS"] = str(threads)
        environments.append(env)
    return environments


def launch_workers(argv: Sequence[str], workers: int, device: str) -> int:
    """Run ``bench`` with ``argv`` in ``workers`` worker processes; 0 when every worker succeeded, else the
    first failing worker's exit status."""
    command = [sys.executable, "-m", "lcbench", *argv]
    codes = run_children([Child(command, env) for env in worker_environments(workers, device)])
    for rank, code in enumerate(codes):
        if code:
            print(f"bench run: worker {rank} of {workers} exited with status {code}", file=sys.stderr)
    return next((code for code in codes if code), 0)
