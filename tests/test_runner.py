"""Runner and run store: planning, resume, failures, locking, manifest, method identity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bench.store import RunStore
from lcbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def bench(*args: str) -> int:
    return main(["--quiet", *args])


def items(run: Path) -> list[Path]:
    return sorted(run.glob("items/*/*/*.json"))


def test_run_writes_one_png_and_record_per_item(tmp_path, fake_plugin):
    out = tmp_path / "run"
    assert bench("--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--dataset", "random",
                 "--seeds", "2", "--out", str(out)) == 0
    store = RunStore(out)
    manifest = store.read_manifest()
    scenes = manifest["scenes"]
    records = list(store.records())
    assert len(records) == len(scenes) * 2
    assert len(list(out.glob("items/*/*/*.png"))) == len(records)
    assert manifest["methods"]["fake-solid"]["params"]["delay"] == 0.0
    assert set(manifest["packages"]) >= {"torch", "diffusers", "transformers"}
    assert len(manifest["dataset"]["spec_hash"]) == 16
    for rec in records:
        assert rec.ok and rec.image is not None
        with Image.open(rec.image) as img:
            img.load()
        assert rec.data["record"]["color"]


def test_rerun_skips_finished_items(tmp_path, fake_plugin, capsys):
    out = tmp_path / "run"
    args = ["--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--dataset", "random", "--out", str(out)]
    assert bench(*args) == 0
    first = {p: p.stat().st_mtime_ns for p in items(out)}
    capsys.readouterr()
    assert bench(*args) == 0
    assert "0 generated" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in items(out)} == first


@pytest.mark.parametrize("kind", ["exception", "nan", "oom"])
def test_failed_item_is_recorded_and_run_goes_on(tmp_path, fake_plugin, kind):
    out = tmp_path / "run"
    from bench.spec import load_spec

    scenes = list(load_spec(REPO / "datasets" / "random.yaml").scenes)
    assert bench("--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--dataset", "random",
                 "--seeds", "1", "--out", str(out), "--param", f"fake-solid.fail_on={kind}",
                 "--param", f"fake-solid.fail_scene={scenes[0]}") == 0
    records = list(RunStore(out).records())
    failed = [r for r in records if not r.ok]
    assert len(failed) == 1 and failed[0].key.scene == scenes[0]
    assert failed[0].data["error_kind"] == kind
    assert failed[0].image is None
    assert sum(r.ok for r in records) == len(records) - 1


def test_params_are_part_of_the_method_identity(tmp_path, fake_plugin):
    out = tmp_path / "run"
    base = ["--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--dataset", "random", "--out", str(out)]
    assert bench(*base) == 0
    assert bench(*base, "--param", "fake-solid.level=2") == 0
    methods = RunStore(out).read_manifest()["methods"]
    assert "fake-solid" in methods
    other = [k for k in methods if k != "fake-solid"]
    assert len(other) == 1 and other[0].startswith("fake-solid@")
    assert methods[other[0]]["params"]["level"] == 2


def test_unknown_param_and_method_are_clear_errors(tmp_path, fake_plugin, capsys):
    assert bench("--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--out", str(tmp_path / "r"),
                 "--param", "fake-solid.nope=1") == 2
    assert "unknown parameter 'nope'" in capsys.readouterr().err
    assert bench("run", "--methods", "no-such-method", "--out", str(tmp_path / "r")) == 2
    assert "unknown method 'no-such-method'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "items").exists()


def test_second_writer_is_refused_by_the_lock(tmp_path, fake_plugin, capsys):
    out = tmp_path / "run"
    lock = RunStore(out).lock(0)
    try:
        assert bench("--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--out", str(out)) == 2
        assert "another `bench run` is writing this run folder" in capsys.readouterr().err
    finally:
        lock.release()
    assert items(out) == []


def test_run_folder_from_another_spec_is_refused(tmp_path, fake_plugin, capsys):
    out = tmp_path / "run"
    assert bench("--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--out", str(out)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["dataset"]["spec_hash"] = "0" * 16
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert bench("--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--out", str(out)) == 2
    assert "spec hash" in capsys.readouterr().err


def _bench_process(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lcbench", "--quiet", *args],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_halfway_then_resume_gives_exactly_one_image_per_item(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--methods", "lora-merge", "--dataset", "random", "--out", str(out),
            "--param", "lora-merge.steps=4"]
    proc = _bench_process(args)
    manifest = out / "manifest.json"
    deadline = time.time() + 900  # generous: the test machine may be shared
    total = None
    while time.time() < deadline:
        if manifest.is_file() and total is None:
            data = json.loads(manifest.read_text())
            total = len(data["scenes"]) * data["seeds"]
        if total and len(items(out)) >= max(1, total // 2):
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert total and 0 < len(items(out)) < total
    done = subprocess.run([sys.executable, "-m", "lcbench", "--quiet", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    records = list(RunStore(out).records())
    assert len(records) == total and all(r.ok for r in records)
    pngs = sorted(out.glob("items/*/*/*.png"))
    assert len(pngs) == total
    for png in pngs:
        with Image.open(png) as img:
            img.load()
    assert not list(out.glob("items/**/.*.tmp"))


@pytest.mark.slow
def test_accelerate_launch_shards_across_two_processes(tmp_path, fake_plugin):
    """`accelerate launch -m lcbench run`: RANK/WORLD_SIZE split the plan, both ranks write one run folder."""
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lcbench", "--quiet",
         "--plugins", str(fake_plugin), "run", "--methods", "fake-solid", "--dataset", "random", "--seeds", "3",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800, env={**os.environ, "FAKE_DELAY": "0.05"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = list(RunStore(out).records())
    manifest = RunStore(out).read_manifest()
    assert len(records) == len(manifest["scenes"]) * 3
    assert len({r.key for r in records}) == len(records)
    assert {r.data["rank"] for r in records} == {0, 1}
    assert len({r.data["record"]["pid"] for r in records}) == 2
