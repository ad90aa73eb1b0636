"""Child processes that stop with their parent: signals are passed on, and none outlives the parent.

Both ``bench dashboard`` (one Streamlit server) and ``bench run --workers N`` (N workers) start their
work in children through :func:`run_children`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Child:
    """One child's command line and environment (``None``: this process's)."""

    argv: Sequence[str]
    env: Mapping[str, str] | None = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the process that started it dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def exit_status(code: int) -> int:
    """A child's return code as a shell reports it: 128 + the signal number for a child killed by a signal."""
    return 128 - code if code < 0 else code


def run_children(children: Sequence[Child]) -> list[int]:
    """Start ``children``, pass SIGTERM/SIGINT on to each, wait for all; their exit statuses, in order.

    Each child has its own process group, so a terminal's Ctrl-C reaches it once (through this process).
    """
    started: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in started:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        for child in children:
            started.append(
                subprocess.Popen(
                    list(child.argv),
                    env=None if child.env is None else dict(child.env),
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            )
        return [exit_status(process.wait()) for process in started]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in started:
            if process.poll() is None:  # only when waiting was interrupted by an exception
                process.terminate()
                process.wait()
