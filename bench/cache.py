"""The bench's cache folder (generated tiny assets, fused models, config folders, residuals)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "LCBENCH_CACHE"


def default_cache_dir() -> Path:
    """The bench's cache folder: ``$LCBENCH_CACHE``, else ``~/.cache/lcbench``."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lcbench"
