"""Test environment: offline hubs, a private asset cache, quiet libraries."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("LCBENCH_CACHE", str(Path(tempfile.gettempdir()) / "lcbench-test-cache"))
os.environ.pop("LCBENCH_PLUGINS", None)

import pytest  # noqa: E402

from bench.plugins import plugin_manager  # noqa: E402

plugin_manager()  # the process's manager, with every plugin, before any test limits LCBENCH_PLUGINS

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


def slowed(work: Callable[..., Any], calls: list[int], seconds: float = 0.5) -> Callable[..., Any]:
    """``work`` that first notes the calling thread in ``calls`` and waits, so that other callers arrive meanwhile."""

    def slow(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.get_ident())
        time.sleep(seconds)
        return work(*args, **kwargs)

    return slow


def at_once(call: Callable[[], Any], times: int = 2) -> list[Any]:
    """The results of ``call`` run in ``times`` threads started together."""
    results: list[Any] = []
    callers = [threading.Thread(target=lambda: results.append(call())) for _ in range(times)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    return results


@pytest.fixture
def fake_plugin() -> Path:
    """A local plugin file registering fast fake methods (no models)."""
    return FIXTURES / "fake_plugin.py"


@pytest.fixture(scope="module")
def pipe():
    """The tiny SD1.5-layout pipeline (fixed seeds), built once per test module."""
    from randomworld.models import build_random_pipeline

    pipeline = build_random_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one intra-op thread is many times faster than two on a shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny dataset whose assets live in a folder the test may break."""
    import shutil

    import yaml

    from bench.assets import AssetResolver
    from bench.spec import load_spec

    tiny = load_spec(REPO / "datasets" / "random.yaml")
    assets = tmp_path / "assets"
    shutil.copytree(AssetResolver(tiny, None).root, assets)
    data = yaml.safe_load((REPO / "datasets" / "random.yaml").read_text())
    data["asset_root"] = str(assets)
    data["name"] = "tiny-copy"
    spec = tmp_path / "tiny-copy.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec, assets
