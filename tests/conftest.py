"""Test environment: offline hubs, a private asset cache, quiet libraries."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("LCBENCH_CACHE", str(Path(tempfile.gettempdir()) / "lcbench-test-cache"))
os.environ.pop("LCBENCH_PLUGINS", None)

import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_plugin() -> Path:
    """A local plugin file registering fast fake methods (no models)."""
    return FIXTURES / "fake_plugin.py"
