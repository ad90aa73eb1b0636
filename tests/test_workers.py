"""`bench run --workers N`: one run split over N local processes that stop with their parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.runner import LAUNCH_VARIABLE, shard_from_env
from bench.store import RunStore
from lcbench.cli import main
from lcbench.workers import WorkersError, usable_cpus, worker_count, worker_environments

REPO = Path(__file__).resolve().parents[1]
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", LAUNCH_VARIABLE, "OMP_NUM_THREADS")
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}


def test_worker_count_reads_integers_and_auto() -> None:
    assert worker_count("3", "cpu") == 3
    assert worker_count("auto", "cpu") == usable_cpus() == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two", "1.5", ""):
        with pytest.raises(WorkersError, match=rf"--workers: expected a positive integer or 'auto' \(got '{bad}'\)"):
            worker_count(bad, "cpu")


def test_worker_environments_make_one_launch_with_a_share_of_the_cores() -> None:
    envs = worker_environments(2, "cpu", {"PATH": "/bin"}, cpus=4)
    assert [(e["RANK"], e["WORLD_SIZE"], e["OMP_NUM_THREADS"], e["PATH"]) for e in envs] == [
        ("0", "2", "2", "/bin"), ("1", "2", "2", "/bin")]  # fmt: skip
    shards = [shard_from_env(e) for e in envs]
    assert [(s.rank, s.world) for s in shards] == [(0, 2), (1, 2)]
    assert shards[0].launch == shards[1].launch and shards[0].launch  # one launch for the run lock
    again = shard_from_env(worker_environments(2, "cpu", {}, cpus=4)[0])
    assert again.launch != shards[0].launch  # a second `bench run --workers` is another launch
    assert worker_environments(3, "cpu", {}, cpus=2)[2]["OMP_NUM_THREADS"] == "1"
    assert worker_environments(2, "cpu", {"OMP_NUM_THREADS": "5"}, cpus=2)[1]["OMP_NUM_THREADS"] == "5"
    assert worker_environments(2, "cpu", {"OMP_NUM_THREADS": ""}, cpus=2)[1]["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in worker_environments(2, "cuda", {}, cpus=2)[0]


def test_workers_are_refused_under_a_launcher(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(WorkersError, match=r"--workers 2: expected no launcher variables \(got RANK, WORLD_SIZE set\)"):
        worker_environments(2, "cpu", {"RANK": "0", "WORLD_SIZE": "2"})
    assert main(["run", "--dataset", "random", "--workers", "many"]) == 2
    assert "bench: error: --workers: expected a positive integer or 'auto' (got 'many')" in capsys.readouterr().err


def _run_with_workers(out: Path, fake_plugin: Path, delay: str, seeds: int = 2) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lcbench", "--quiet", "--plugins", str(fake_plugin), "run", "--methods",
         "fake-solid", "--dataset", "random", "--seeds", str(seeds), "--out", str(out), "--workers", "2"],
        cwd=REPO, env={**CLEAN_ENV, "FAKE_DELAY": delay}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
def test_two_workers_split_the_plan_each_with_one_thread(tmp_path: Path, fake_plugin: Path) -> None:
    out = tmp_path / "run"
    proc = _run_with_workers(out, fake_plugin, "0.05")
    stdout, stderr = proc.communicate(timeout=1800)
    assert proc.returncode == 0, stderr[-3000:]
    records = list(RunStore(out).records())
    manifest = RunStore(out).read_manifest()
    assert len(records) == len(manifest["scenes"]) * 2 and len({r.key for r in records}) == len(records)
    assert {r.data["rank"] for r in records} == {0, 1}
    assert len({r.data["record"]["pid"] for r in records}) == 2
    assert {r.data["record"]["threads"] for r in records} == {max(1, usable_cpus() // 2)}
    assert "bench run: 2 workers (cpu)" in stdout
    assert "planned for worker 0 of 2" in stdout and "planned for worker 1 of 2" in stdout


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.is_file() else []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_sigterm_stops_every_worker_and_a_rerun_finishes_without_duplicates(
    tmp_path: Path, fake_plugin: Path
) -> None:
    out = tmp_path / "run"
    proc = _run_with_workers(out, fake_plugin, "0.5", seeds=4)
    deadline = time.monotonic() + 900  # generous: the test machine may be shared
    while {json.loads(p.read_text())["rank"] for p in out.glob("items/*/*/*.json")} != {0, 1}:
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail(f"the workers did not both start: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    end = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    total = len(RunStore(out).read_manifest()["scenes"]) * 4
    assert 0 < len(list(out.glob("items/*/*/*.json"))) < total
    rerun = _run_with_workers(out, fake_plugin, "0", seeds=4)
    _, stderr = rerun.communicate(timeout=1800)
    assert rerun.returncode == 0, stderr[-3000:]
    records = list(RunStore(out).records())
    assert len(records) == total and len({r.key for r in records}) == total and all(r.ok for r in records)
    assert not list(out.glob("items/**/.*.tmp"))
