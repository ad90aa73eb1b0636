"""The bench's cache folder (generated tiny assets, fused models, config folders, residuals)."""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock

ENV_CACHE = "LCBENCH_CACHE"


def default_cache_dir() -> Path:
    """The bench's cache folder: ``$LCBENCH_CACHE``, else ``~/.cache/lcbench``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lcbench"


def entry_lock(entry: Path) -> FileLock:
    """The lock beside a cache entry (``<entry>.lock``, its folder made): processes that need the entry take it,
    so that the first one makes the entry and the others then read it."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{entry}.lock")
