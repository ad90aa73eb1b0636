"""Hardening of runs and the files around them, as a hostile user tried it.

* Bad input gets one clear error: exit code 2, one line naming the file (and line or field) and what was
  expected, and nothing written (a table of cases with the exact messages).
* Ranks: RANK / WORLD_SIZE / LOCAL_RANK are checked before anything is written; every rank checks the run
  folder's manifest; one run-level lock lets only the ranks of one launch write (two real processes).
* Resume verifies every item before it skips it and redoes broken ones; scoring names a broken item's file.
* Temporary files of killed writers are cleaned, but never while another writer is live.
* A file that carries pickled code is refused through every entry point, without running it, and no
  message passes on torch's advice to load it with ``weights_only=False``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from bench.assets import AssetResolver
from bench.catalog import load_dataset
from bench.spec import load_spec
from bench.store import RunStore, StoreError
from lcbench.cli import main

REPO = Path(__file__).resolve().parents[1]
FAKE = REPO / "tests" / "fixtures" / "fake_plugin.py"
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                  "TORCHELASTIC_RUN_ID")
RUN_ARGS = ("--plugins", str(FAKE), "run", "--methods", "fake-solid", "--dataset", "random", "--seeds", "2")
SCORE_ARGS = ("score", "{run}", "--no-calibrate", "--metrics", "clip_i")
REDO = "rerun the `bench run` that made this folder: it checks every item and redoes broken ones"
ADVICE = "so it was refused and nothing in it was run; convert it to .safetensors with a tool you trust"
FIRST = "items/fake-solid/cat_dog/000"  # the first item in sorted order
LOCK_FILES = (".lock", ".lock.json")


@pytest.fixture(autouse=True)
def _no_rank_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def made_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the fake method on the tiny dataset (5 scenes x 2 seeds), copied by each test."""
    out = tmp_path_factory.mktemp("made") / "run"
    assert main(["--quiet", *RUN_ARGS, "--out", str(out)]) == 0
    return out


def _copy(made_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(made_run, run)
    return run


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the lock files (which a refused writer may touch)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (p.name in LOCK_FILES or p.name.startswith(".lock.rank"))
    }


def _touching_payload(marker: Path) -> object:
    """An object whose unpickling would create ``marker`` (a folder): proof that code ran."""

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.makedirs, (str(marker),))

    return Payload()


@contextlib.contextmanager
def _held(run: Path, rank: int, world: int, plan: str | None = None) -> Iterator[None]:
    """Hold a rank's lock in this process, as a live writer of a launch of ``world`` would."""
    lock = RunStore(run).lock(rank, world, plan=plan)
    try:
        yield
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------------
# The table: (id, setup, command, message after "bench: error: ", nothing written)


@dataclass
class Case:
    """What a setup function may use and change."""

    run: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack


def env(**values: str) -> Callable[[Case], None]:
    def setup(case: Case) -> None:
        for name, value in values.items():
            case.monkeypatch.setenv(name, value)

    return setup


def manifest(content: bytes | object) -> Callable[[Case], None]:
    def setup(case: Case) -> None:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (case.run / "manifest.json").write_bytes(data)

    return setup


def edit_manifest(**changes: object) -> Callable[[Case], None]:
    def setup(case: Case) -> None:
        path = case.run / "manifest.json"
        data = json.loads(path.read_text())
        for dotted, value in changes.items():
            *parents, last = dotted.split("__")
            target = data
            for parent in parents:
                target = target[parent]
            if value is None:
                del target[last]
            else:
                target[last] = value
        path.write_text(json.dumps(data))

    return setup


def record(content: bytes | None = None, **changes: object) -> Callable[[Case], None]:
    def setup(case: Case) -> None:
        path = case.run / f"{FIRST}.json"
        if content is not None:
            path.write_bytes(content)
            return
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))

    return setup


def truncate_png(size: int) -> Callable[[Case], None]:
    def setup(case: Case) -> None:
        path = case.run / f"{FIRST}.png"
        path.write_bytes(path.read_bytes()[:size])

    return setup


def hold(rank: int, world: int, plan: str | None = None, **variables: str) -> Callable[[Case], None]:
    def setup(case: Case) -> None:
        case.stack.enter_context(_held(case.run, rank, world, plan))
        env(**variables)(case)

    return setup


def pickled_file(name: str, content: bytes | None = None) -> Callable[[Case], None]:
    def setup(case: Case) -> None:
        path = case.tmp / name
        if content is None:
            torch.save({"visual.proj": torch.zeros(2), "extra": _touching_payload(case.tmp / "pwned")}, path)
        else:
            path.write_bytes(content)

    return setup


def both(*setups: Callable[[Case], None]) -> Callable[[Case], None]:
    def setup(case: Case) -> None:
        for one in setups:
            one(case)

    return setup


def _other_spec(case: Case) -> None:
    """A copy of the tiny spec with another global prompt: the same name, another spec hash."""
    text = (REPO / "datasets" / "random.yaml").read_text()
    assert text.count("a cat and a dog on the grass, high quality") == 1
    (case.tmp / "random.yaml").write_text(text.replace("a cat and a dog on the grass", "a cat and a dog indoors"))


RANK_SPAN = "an integer from 0 to 1 (WORLD_SIZE is 2)"
FRESH = ("--out", "{tmp}/fresh")
LOCK_REFUSAL = (
    "{run}/.lock.json: ranks [1] of a launch with WORLD_SIZE=2 are writing this run folder; expected no other "
    "writer, or only the other ranks of this process's launch (this process: {me}); wait for them to finish or "
    "pass a different --out"
)

BAD_INPUT: list[tuple[str, Callable[[Case], None], tuple[str, ...], str, bool]] = [
    # -- rank variables: checked before anything is written (the folder is not even made)
    ("rank-abc", env(RANK="abc"), (*RUN_ARGS, *FRESH),
     "environment variable RANK: expected 0 (WORLD_SIZE is not set: one process) (got 'abc'); nothing was written",
     True),
    ("rank-abc-of-2", env(RANK="abc", WORLD_SIZE="2"), (*RUN_ARGS, *FRESH),
     f"environment variable RANK: expected {RANK_SPAN} (got 'abc'); nothing was written", True),
    ("world-size-0", env(WORLD_SIZE="0"), (*RUN_ARGS, *FRESH),
     "environment variable WORLD_SIZE: expected an integer >= 1, the number of processes of the launch (got '0'); "
     "nothing was written", True),
    ("world-size-empty", env(WORLD_SIZE=""), (*RUN_ARGS, *FRESH),
     "environment variable WORLD_SIZE: expected an integer >= 1, the number of processes of the launch (got ''); "
     "nothing was written", True),
    ("rank-2-of-2", env(RANK="2", WORLD_SIZE="2"), (*RUN_ARGS, *FRESH),
     f"environment variable RANK: expected {RANK_SPAN} (got '2'); nothing was written", True),
    ("rank-minus-1-of-2", env(RANK="-1", WORLD_SIZE="2"), (*RUN_ARGS, *FRESH),
     f"environment variable RANK: expected {RANK_SPAN} (got '-1'); nothing was written", True),
    ("rank-1-without-world-size", env(RANK="1"), (*RUN_ARGS, *FRESH),
     "environment variable RANK: expected 0 (WORLD_SIZE is not set: one process) (got '1'); nothing was written",
     True),
    ("rank-missing-of-2", env(WORLD_SIZE="2"), (*RUN_ARGS, *FRESH),
     f"environment variable RANK: expected {RANK_SPAN} (got nothing: RANK is not set); nothing was written", True),
    ("rank-5000-digits", env(RANK="9" * 5000, WORLD_SIZE="2"), (*RUN_ARGS, *FRESH),
     f"environment variable RANK: expected {RANK_SPAN} (got '{'9' * 199}… (str of 5000 characters)); "
     "nothing was written", True),
    ("local-rank-not-int", env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="gpu0"), (*RUN_ARGS, *FRESH),
     "environment variable LOCAL_RANK: expected an integer from 0 to 1 (WORLD_SIZE is 2), this process's device "
     "on its machine (got 'gpu0'); nothing was written", True),
    # -- the run-level lock: a plain run never shares a folder with ranks, nor ranks of two launches
    ("plain-run-while-rank-1-of-2-runs", hold(1, 2), (*RUN_ARGS, "--out", "{run}"),
     LOCK_REFUSAL.format(run="{run}", me="a single process (WORLD_SIZE not set or 1)"), True),
    ("rank-0-of-3-while-rank-1-of-2-runs", hold(1, 2, RANK="0", WORLD_SIZE="3"), (*RUN_ARGS, "--out", "{run}"),
     LOCK_REFUSAL.format(run="{run}", me="rank 0 of WORLD_SIZE=3"), True),
    ("rank-0-of-2-with-another-plan", hold(1, 2, "0" * 16, RANK="0", WORLD_SIZE="2"),
     (*RUN_ARGS, "--out", "{run}"),
     LOCK_REFUSAL.format(run="{run}", me="rank 0 of WORLD_SIZE=2 with another plan: other methods, scenes, seeds "
                         "or order"), True),
    ("second-plain-run", hold(0, 1), (*RUN_ARGS, "--out", "{run}"),
     "{run}: another `bench run` is writing this run folder (lock .lock.rank0 is held); expected one writer per "
     "rank; wait for it to finish or pass a different --out", True),
    ("rank-1-taken", hold(1, 2, RANK="1", WORLD_SIZE="2"), (*RUN_ARGS, "--out", "{run}"),
     "{run}: another `bench run` is writing this run folder as rank 1 (lock .lock.rank1 is held); expected one "
     "writer per rank; wait for it to finish or pass a different --out", True),
    # -- every rank checks the manifest: rank 1 never writes into another spec's run
    ("rank-1-other-spec", both(env(RANK="1", WORLD_SIZE="2"), _other_spec),
     ("--plugins", str(FAKE), "run", "--methods", "fake-solid", "--dataset", "{tmp}/random.yaml", "--seeds", "2",
      "--out", "{run}"),
     "{run}/manifest.json: field 'dataset.spec_hash': expected {other_hash}, the spec hash of dataset 'random' as "
     "it is now (got '{random_hash}' of dataset 'random': the run folder was made from another spec); use a new "
     "--out", True),
    ("rank-1-other-seed-scheme", env(RANK="1", WORLD_SIZE="2"),
     (*RUN_ARGS, "--benchmark", "smoke", "--out", "{run}"),
     "{run}/manifest.json: field 'seed_scheme': expected 'offset', this run's seed scheme (got 'paper'); use a "
     "new --out", True),
    # -- manifests that are not what `bench run` writes, through `bench run` and `bench score`
    ("manifest-empty-object-run", manifest({}), (*RUN_ARGS, "--out", "{run}"),
     "{run}/manifest.json: field 'dataset': expected a JSON object (required field is missing); nothing was "
     "generated", True),
    ("manifest-empty-object-score", manifest({}), ("score", "{run}"),
     "{run}/manifest.json: field 'dataset': expected a JSON object (required field is missing)", True),
    ("manifest-other-format", edit_manifest(format="lcbench-run/9"), ("score", "{run}"),
     "{run}/manifest.json: field 'format': expected 'lcbench-run/1' (got 'lcbench-run/9')", True),
    ("manifest-list", manifest([1, 2]), ("score", "{run}"),
     "{run}/manifest.json: field '<top>': expected a JSON object (the manifest `bench run` writes) (got 'list')",
     True),
    ("manifest-garbled", manifest(b'{"format": "lcbench-run/1", "dataset": {"name": "rand'), ("score", "{run}"),
     "{run}/manifest.json: line 1, column 49: expected the manifest `bench run` writes, well-formed JSON "
     "(Unterminated string starting at)", True),
    ("manifest-not-utf8", manifest(b'{"format": "lcbench-run/1\xff"}'), ("score", "{run}"),
     "{run}/manifest.json: line 1, column 26: expected the manifest `bench run` writes, UTF-8 JSON text "
     "(invalid start byte) (got b'\\xff')", True),
    ("manifest-nested-too-deep", manifest(b"[" * 100_000), ("score", "{run}"),
     "{run}/manifest.json: expected the manifest `bench run` writes, JSON nested a few levels deep (it nests too "
     "deeply)", True),
    ("manifest-seeds-string", edit_manifest(seeds="2"), ("score", "{run}"),
     "{run}/manifest.json: field 'seeds': expected an integer >= 1 (got '2')", True),
    ("manifest-no-spec-hash", edit_manifest(dataset__spec_hash=None), (*RUN_ARGS, "--out", "{run}"),
     "{run}/manifest.json: field 'dataset.spec_hash': expected a string (required field is missing); nothing was "
     "generated", True),
    ("manifest-methods-list", edit_manifest(methods=["fake-solid"]), ("score", "{run}"),
     "{run}/manifest.json: field 'methods': expected a JSON object of method key -> method (got ['fake-solid'])",
     True),
    # -- item records and images, through `bench score`: the broken item's file is named
    ("record-garbled", record(b'{"method": "fake-sol'), SCORE_ARGS,
     f"{{run}}/{FIRST}.json: line 1, column 12: expected an item record written by `bench run`, well-formed JSON "
     "(Unterminated string starting at)", True),
    ("record-a-list", record(b"[]"), SCORE_ARGS,
     f"{{run}}/{FIRST}.json: field '<top>': expected a JSON object (an item record `bench run` writes) "
     "(got 'list')", True),
    ("record-image-path-traversal", record(image="../../../../etc/passwd"), SCORE_ARGS,
     f"{{run}}/{FIRST}.json: field 'image': expected '{FIRST}.png' (got '../../../../etc/passwd')", True),
    ("record-of-another-item", record(index=7), SCORE_ARGS,
     f"{{run}}/{FIRST}.json: field 'index': expected 0, as the record's path says (got 7)", True),
    ("record-unknown-status", record(status="done"), SCORE_ARGS,
     f"{{run}}/{FIRST}.json: field 'status': expected one of ['ok', 'failed'] (got 'done')", True),
    ("png-truncated", truncate_png(60), SCORE_ARGS,
     f"{{run}}/{FIRST}.png: expected the PNG image of the item recorded in 000.json, a file that decodes "
     f"(OSError: image file is truncated); {REDO}", False),  # the conventions are written before images load
    # -- reference files of `bench check`
    ("reference-not-utf8", pickled_file("ref.json", b'{"name": "caf\xe9"}'), ("check", "--reference", "{tmp}/ref.json"),
     "{tmp}/ref.json: line 1, column 14: expected UTF-8 JSON text (invalid continuation byte) (got b'\\xe9')", True),
    # -- CLIP weights of `bench score`: opened weights-only before open_clip sees them
    ("clip-weights-pickled-code", pickled_file("evil.pt"),
     (*SCORE_ARGS, "--clip-model", "ViT-B-32-quickgelu", "--clip-weights", "{tmp}/evil.pt"),
     "CLIP model: CLIP weights '{tmp}/evil.pt': expected a state dict of plain tensors; it carries pickled code "
     f"(torch.load(weights_only=True) refused the global 'os.makedirs'), {ADVICE}", True),
    ("clip-weights-garbage", pickled_file("junk.pt", b"not a checkpoint"),
     (*SCORE_ARGS, "--clip-model", "ViT-B-32-quickgelu", "--clip-weights", "{tmp}/junk.pt"),
     "CLIP model: CLIP weights '{tmp}/junk.pt': expected a state dict of plain tensors; it is no plain file of "
     "tensors (torch.load(weights_only=True) refused pickle opcode 110: pickled code or objects, or no torch file "
     f"at all), {ADVICE}", True),
    ("clip-weights-truncated-zip", pickled_file("cut.pt", b"PK\x03\x04" + b"\x00" * 40),
     (*SCORE_ARGS, "--clip-model", "ViT-B-32-quickgelu", "--clip-weights", "{tmp}/cut.pt"),
     "CLIP model: CLIP weights '{tmp}/cut.pt': expected a readable torch weights file; not a readable torch file "
     "(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory)", True),
    ("clip-weights-broken-safetensors", pickled_file("w.safetensors", b"\xff" * 16),
     (*SCORE_ARGS, "--clip-model", "ViT-B-32-quickgelu", "--clip-weights", "{tmp}/w.safetensors"),
     "CLIP model: CLIP weights '{tmp}/w.safetensors': expected a readable .safetensors file (SafetensorError: "
     "Error while deserializing header: header too large)", True),
]


@pytest.mark.parametrize(("setup", "command", "message", "nothing_written"), [c[1:] for c in BAD_INPUT],
                         ids=[c[0] for c in BAD_INPUT])
def test_bad_input_table(made_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str], setup: Callable[[Case], None],
                         command: tuple[str, ...], message: str, nothing_written: bool) -> None:
    run = _copy(made_run, tmp_path)
    hashes = {"random_hash": load_dataset("random").spec_hash(), "run": str(run), "tmp": str(tmp_path)}
    with contextlib.ExitStack() as stack:
        setup(Case(run, tmp_path, monkeypatch, stack))
        if (tmp_path / "random.yaml").is_file():
            hashes["other_hash"] = load_spec(tmp_path / "random.yaml").spec_hash()
        before = _snapshot(tmp_path)
        capsys.readouterr()
        code = main(["--quiet", *(part.format(**hashes) for part in command)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err == f"bench: error: {message.format(**hashes)}\n"
    assert not (tmp_path / "pwned").exists(), "unpickling ran code"
    if nothing_written:
        assert _snapshot(tmp_path) == before
    assert "weights_only` set to `False" not in err and "Re-running" not in err


def test_the_table_covers_every_kind_of_input() -> None:
    kinds = {case[0].split("-")[0] for case in BAD_INPUT}
    assert {"rank", "world", "local", "manifest", "record", "png", "reference", "clip"} <= kinds


# ----------------------------------------------------------------------------------------------
# Ranks: two real processes


def _rank_process(out: Path, rank: int, world: int, seeds: int, delay: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), FAKE_DELAY=delay)
    return subprocess.Popen(
        [sys.executable, "-m", "lcbench", "--quiet", "--plugins", str(FAKE), "run", "--methods", "fake-solid",
         "--dataset", "random", "--seeds", str(seeds), "--out", str(out)],
        cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_two_ranks_share_one_folder_and_refuse_a_plain_run_meanwhile(
    made_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two processes with RANK/WORLD_SIZE split the plan; while they run, the run-level lock refuses a plain
    run and a rank of a launch of another world size (the CLI's side of these refusals is in the table)."""
    out = tmp_path / "run"
    seeds = 4  # 5 scenes x 4 seeds = 20 items, 10 per rank, 1 s each
    ranks = [_rank_process(out, rank, 2, seeds, "1.0") for rank in (0, 1)]
    store = RunStore(out)
    try:
        deadline = time.monotonic() + 1800  # generous: the test machine may be shared
        while True:  # both ranks are generating: each has written an item
            written = {json.loads(p.read_text())["rank"] for p in out.glob("items/*/*/*.json")}
            if written == {0, 1}:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in ranks):
                pytest.fail(f"ranks did not both start: {[p.communicate()[1][-2000:] for p in ranks]}")
            time.sleep(0.1)
        with pytest.raises(StoreError) as plain:
            store.lock(0, 1)  # what a plain `bench run` does
        with pytest.raises(StoreError) as other_world:
            store.lock(2, 3)  # a rank of a launch of three
        assert all(p.poll() is None for p in ranks), "the ranks finished before the conflicting starts"
    finally:
        results = [p.communicate(timeout=1800) for p in ranks]
    refusal = LOCK_REFUSAL.replace("ranks [1]", "ranks [0, 1]")
    assert str(plain.value) == refusal.format(run=out, me="a single process (WORLD_SIZE not set or 1)")
    assert str(other_world.value) == refusal.format(run=out, me="rank 2 of WORLD_SIZE=3")
    assert [p.returncode for p in ranks] == [0, 0], [r[1][-3000:] for r in results]
    records = list(RunStore(out).records())
    assert len(records) == 5 * seeds and len({r.key for r in records}) == len(records)
    by_rank = {rank: sum(r.data["rank"] == rank for r in records) for rank in (0, 1)}
    assert by_rank == {0: 10, 1: 10}
    assert len({r.data["record"]["pid"] for r in records}) == 2 and all(r.ok for r in records)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("items/*/*/*")}
    capsys.readouterr()
    assert main(["--quiet", *RUN_ARGS[:-1], str(seeds), "--out", str(out)]) == 0  # now the folder is free
    assert "0 generated, 20 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("items/*/*/*")} == mtimes


def test_rank_1_waits_a_bounded_time_for_rank_0s_manifest(tmp_path: Path) -> None:
    from bench.plugins import plugin_manager, registered_methods
    from bench.runner import MethodRequest, RunError, run_benchmark

    spec = load_dataset("random")
    merge = registered_methods(plugin_manager())["lora-merge"]
    request = MethodRequest(merge, merge.resolve_params({"steps": "1"}))
    out = tmp_path / "run"
    started = time.monotonic()
    with pytest.raises(RunError) as info:
        run_benchmark(spec, AssetResolver(spec), [request], ["cat_dog"], 1, out, shard=(1, 2), manifest_wait=0.5,
                      quiet=True)
    assert 0.5 <= time.monotonic() - started < 60
    assert str(info.value) == (
        f"{out}/manifest.json: expected rank 0 of this launch (WORLD_SIZE=2) to write the manifest of this run "
        "within 0.5 s (rank 1 waited for it; start every rank with the same options); nothing was generated"
    )
    assert not (out / "items").exists() and not (out / "manifest.json").exists()


def test_temporaries_are_cleaned_only_when_no_other_writer_is_live(
    made_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _copy(made_run, tmp_path)
    root_tmp = run / ".manifest.json.k1ll3d.tmp"  # a killed writer's manifest, at the run root
    item_tmp = run / "items" / "fake-solid" / "cat_dog" / ".000.png.k1ll3d.tmp"
    with _held(run, 1, 2):  # rank 1 of 2 is live (it joined first): its temporary files may be in use
        for path in (root_tmp, item_tmp):
            path.write_bytes(b"half")
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert main(["--quiet", *RUN_ARGS, "--out", str(run)]) == 0
        assert root_tmp.exists() and item_tmp.exists()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert main(["--quiet", *RUN_ARGS, "--out", str(run)]) == 0  # alone: cleans
    assert not root_tmp.exists() and not item_tmp.exists()
    assert not list(run.rglob("*.tmp"))


# ----------------------------------------------------------------------------------------------
# Resume verifies items


def test_corrupted_items_are_named_by_scoring_then_redone_by_resume(
    made_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(made_run, tmp_path)
    items = run / "items" / "fake-solid"
    truncated, garbled = items / "cat_dog" / "000.png", items / "cat_dog" / "001.json"
    small, orphan = items / "girl_boy" / "000.png", items / "girl_boy" / "001.png"
    wrong_seed = items / "man_cat_dog" / "000.json"
    truncated.write_bytes(truncated.read_bytes()[:60])
    garbled.write_bytes(garbled.read_bytes()[:25])
    Image.new("RGB", (16, 16)).save(small)
    orphan.unlink()  # its record says ok
    data = json.loads(wrong_seed.read_text())
    data["seed"] += 1
    wrong_seed.write_text(json.dumps(data))
    broken = {truncated.with_suffix(".json"), garbled, small.with_suffix(".json"), orphan.with_suffix(".json"),
              wrong_seed}
    untouched = {p: p.stat().st_mtime_ns for p in items.glob("*/*.json") if p not in broken}

    capsys.readouterr()
    assert main(["--quiet", *SCORE_ARGS[:1], str(run), *SCORE_ARGS[2:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bench: error: {garbled}: line 3, column ") and err.count("\n") == 1, err
    assert err.endswith("expected an item record written by `bench run`, well-formed JSON (Unterminated string "
                        "starting at)\n"), err

    assert main(["--quiet", *RUN_ARGS, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"{len(broken)} generated, {10 - len(broken)} already done, 0 failed" in out
    assert out.count("redone (was broken): ") == len(broken)
    assert f"{truncated}: expected a PNG image that decodes (OSError: image file is truncated)" in out
    assert f"{small}: expected a PNG of 128x64 pixels, the scene's size (got PNG 16x16)" in out
    assert f"{orphan}: expected the PNG image of the item recorded in 001.json (no such file)" in out
    assert f"{garbled}: line 3, column " in out
    assert f"{wrong_seed}: field 'seed': expected {data['seed'] - 1}, this item's seed (got {data['seed']})" in out

    records = list(RunStore(run).records())
    assert len(records) == 10 and all(r.ok for r in records)
    spec = load_dataset("random")
    for r in records:
        with Image.open(r.image) as image:
            image.load()
            assert image.size == (spec.scenes[r.key.scene].width, spec.scenes[r.key.scene].height)
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched, "a good item was made again"
    assert main(["--quiet", *SCORE_ARGS[:1], str(run), *SCORE_ARGS[2:]]) == 0


def test_a_folder_where_a_record_belongs_is_reported_by_path(
    made_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(made_run, tmp_path)
    record_path = run / f"{FIRST}.json"
    record_path.unlink()
    record_path.mkdir()
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["--quiet", *RUN_ARGS, "--out", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"bench: error: {record_path}: expected a file written by `bench run` (found a folder or another kind of "
        "file, which a rerun cannot replace); remove it and run again; nothing was generated\n"
    )
    assert _snapshot(run) == before


def test_rank_device_must_exist_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.runner import RunError, Shard, _rank_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _rank_device(Shard(3, 4, 1)) == "cuda:1"
    with pytest.raises(RunError) as info:
        _rank_device(Shard(2, 4, None))
    assert str(info.value) == (
        "environment variable RANK (LOCAL_RANK is not set): expected an integer from 0 to 1, a CUDA device of this "
        "machine (2 found), with --device cuda (got '2'); nothing was written"
    )


def test_a_method_image_of_the_wrong_size_is_a_failed_item(tmp_path: Path) -> None:
    from bench.runner import _check_image

    with pytest.raises(ValueError, match=r"returned a 16x16 image; expected the scene's size 128x64"):
        _check_image(Image.new("RGB", (16, 16)), 128, 64)
    with pytest.raises(TypeError, match="returned a ndarray"):
        import numpy as np

        _check_image(np.zeros((64, 128, 3)), 128, 64)


# ----------------------------------------------------------------------------------------------
# Files that carry pickled code: refused through every entry point, never run


def _evil(path: Path, marker: Path) -> Path:
    torch.save({"params": {"unet": {}, "x": _touching_payload(marker)}}, path)
    return path


def test_pickled_lora_is_refused_by_run_without_torchs_advice(dataset, tmp_path, capsys) -> None:
    spec, assets = dataset
    lora = _evil(assets / "loras" / "cat.pth", tmp_path / "pwned")
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["--quiet", "run", "--methods", "lora-merge", "--dataset", str(spec), "--scenes", "cat_dog",
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"bench: error: {lora}: {spec}: concepts[cat].lora: expected a file of plain tensors and dicts; it carries "
        f"pickled code (torch.load(weights_only=True) refused the global 'os.makedirs'), {ADVICE}; nothing was "
        "generated\n"
    )
    assert not (tmp_path / "pwned").exists() and not (out / "items").exists()


def test_check_assets_opens_what_it_checks_and_lists_refused_files(dataset, tmp_path, capsys) -> None:
    spec, assets = dataset
    lora = _evil(assets / "loras" / "cat.pth", tmp_path / "pwned")
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _touching_payload(tmp_path / "pwned")}, checkpoint)
    data = yaml.safe_load(spec.read_text())
    data["base_models"]["real"] = str(checkpoint)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert main(["check-assets", "--dataset", str(spec)]) == 1
    out = capsys.readouterr().out
    assert not (tmp_path / "pwned").exists()
    assert out.startswith("2 missing or refused assets:")
    refusal = f"(torch.load(weights_only=True) refused the global 'os.makedirs'), {ADVICE}"
    rows = {line.split()[2]: line for line in out.splitlines()[3:]}  # after title, header, rule: field -> row
    assert set(rows) == {"concepts[cat].lora", "base_models.real"}
    assert (f"concepts[cat].lora  refused: expected a file of plain tensors and dicts; it carries pickled code "
            f"{refusal}  {lora}") in rows["concepts[cat].lora"]
    assert f"base_models.real    refused: it carries pickled code {refusal}" in rows["base_models.real"]
    assert rows["base_models.real"].endswith(f"  {checkpoint}")
    assert "Re-running" not in out


def test_pickled_ckpt_base_model_is_refused_by_run(dataset, tmp_path, capsys) -> None:
    spec, _ = dataset
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _touching_payload(tmp_path / "pwned")}, checkpoint)
    data = yaml.safe_load(spec.read_text())
    data["base_models"]["real"] = str(checkpoint)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert main(["--quiet", "run", "--methods", "lora-merge", "--dataset", str(spec), "--scenes", "cat_dog",
                 "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        f"bench: error: {spec}: base_models.real: '{checkpoint}': expected a plain state dict; it carries pickled "
        f"code (torch.load(weights_only=True) refused the global 'os.makedirs'), {ADVICE}; nothing was generated\n"
    )
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()


def test_pickled_cones2_residual_fails_its_items_by_name(tmp_path, capsys) -> None:
    residuals = tmp_path / "residuals"
    residuals.mkdir()
    for concept in ("cat", "dog"):
        torch.save(_touching_payload(tmp_path / "pwned"), residuals / f"{concept}.pt")
    out = tmp_path / "run"
    assert main(["--quiet", "run", "--methods", "cones2", "--dataset", "random", "--scenes", "cat_dog",
                 "--seeds", "1", "--out", str(out), "--param", f"cones2.residual_dir={residuals}"]) == 0
    (failed,) = RunStore(out).records()
    assert not failed.ok and not (tmp_path / "pwned").exists()
    assert failed.data["error"] == (
        f"ValueError: method 'cones2': residual of concept 'cat': '{residuals / 'cat.pt'}': expected a Cones2 "
        "residual (a bare tensor saved by `bench cones2-train`); it carries pickled code (torch.load(weights_only="
        f"True) refused the global 'os.makedirs'), {ADVICE}"
    )
