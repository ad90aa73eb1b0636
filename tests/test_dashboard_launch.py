"""`bench dashboard` passes SIGTERM/SIGINT on to its server and exits with it: no server is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from study_sample import make_sample_runs

from lcbench.dashboard.launch import serve

CHILD = """
import signal, sys, time
def stop(signum, frame):
    print(f"got {signum}", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("ready", flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; it only waits for its parent to collect it
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.is_file() else []


def _wait_for(check, what: str, timeout: float) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_forwards_the_signal_and_returns_the_child_status(sig: signal.Signals, tmp_path: Path) -> None:
    """:func:`serve` in a process of its own, over a child that reports the signal it gets and exits 3."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys\nfrom lcbench.dashboard.launch import serve\n"
        f"sys.exit(serve([sys.executable, '-c', {CHILD!r}]))\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "ready"
    child = _children(parent.pid)[0]
    parent.send_signal(sig)
    out, _ = parent.communicate(timeout=60)
    assert out.strip() == f"got {int(sig)}"  # forwarded once
    assert parent.returncode == 3  # the child's status
    assert not _alive(child)


def test_serve_reports_a_signal_death_as_a_shell_does() -> None:
    code = serve([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert code == 128 + signal.SIGKILL


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bench_dashboard_leaves_no_server_behind(tmp_path: Path) -> None:
    runs = make_sample_runs(tmp_path / "runs")
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("w")
    bench = subprocess.Popen(
        [sys.executable, "-m", "lcbench", "dashboard", *map(str, runs), "--port", str(port), "--address",
         "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
        env=dict(os.environ, HF_HUB_OFFLINE="1"))  # fmt: skip
    try:
        _wait_for(lambda: _health(port), "the dashboard server", timeout=1800)
        servers = _children(bench.pid)
        assert len(servers) == 1 and _alive(servers[0])
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=120) == 0  # Streamlit stops cleanly on SIGTERM, and bench exits with it
        _wait_for(lambda: not _alive(servers[0]), "the server to exit", timeout=30)
        assert not _health(port)
    finally:
        if bench.poll() is None:
            bench.kill()
        log.close()


def _health(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200
    except OSError:
        return False
