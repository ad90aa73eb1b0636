"""Study creation, the SQLite store, concurrency, Table 3 aggregation, agreement and export."""

from __future__ import annotations

import csv
import multiprocessing
import shutil
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from study_sample import make_sample_runs

from bench.store import ItemKey, RunStore
from lcbench.dashboard.launch import ENV_RUNS, app_config, dashboard_command
from lcbench.study import StudyDB, StudyDesignError, StudyError, answers_frame, create_study, export_csv, table3
from lcbench.study.analysis import agreement, mean_ci
from lcbench.study.db import AccessDenied
from lcbench.study.design import participant_order
from lcbench.study.runs import AccessError, RunCatalog


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_sample_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture()
def study(runs: list[Path], tmp_path: Path):
    return create_study(
        runs, tmp_path / "study", questions_per_participant=12, participants=["ann", "ben", "cy"], seed=7
    )


def test_question_set_is_balanced_and_shared(study, runs: list[Path]) -> None:
    db = StudyDB(study.path)
    sets = {code: [q.id for q in db.questions(code)] for code in study.participant_codes}
    assert all(sorted(ids) == list(range(1, 13)) for ids in sets.values())  # same questions for everyone
    questions = db.questions("ann")
    per_count = Counter(q.n_concepts for q in questions)
    assert set(per_count) == {2, 3, 4} and max(per_count.values()) - min(per_count.values()) <= 1
    per_method = Counter(q.label for q in questions)
    assert max(per_method.values()) - min(per_method.values()) <= 1
    # the participant sees readable prompts (concept ids, not tokens) and copied reference images
    assert all("<" not in q.prompt for q in questions)
    assert all((study.path / ref).is_file() for q in questions for c in q.concepts for ref in c["references"])
    assert not (study.path / "study.json").read_text().count(study.admin_token)


def test_order_is_random_per_participant_and_reproducible(study, runs: list[Path], tmp_path: Path) -> None:
    db = StudyDB(study.path)
    orders = {code: [q.id for q in db.questions(code)] for code in study.participant_codes}
    assert len({tuple(o) for o in orders.values()}) == 3
    assert orders["ann"] == participant_order(list(range(1, 13)), 7, "ann")
    again = create_study(
        runs, tmp_path / "again", questions_per_participant=12, participants=["ann", "ben", "cy"], seed=7
    )
    db2 = StudyDB(again.path)
    assert [(q.label, q.scene, q.index) for q in db2.questions("ann")] == [
        (q.label, q.scene, q.index) for q in db.questions("ann")
    ]
    assert again.admin_token != study.admin_token


def test_generated_codes_and_bad_arguments(runs: list[Path], tmp_path: Path) -> None:
    info = create_study(runs, tmp_path / "gen", questions_per_participant=3, participants=4, seed=0)
    assert len(set(info.participant_codes)) == 4 and info.questions == 3
    with pytest.raises(StudyDesignError, match="questions_per_participant: expected at most 24 .* pass --questions 24"):
        create_study(runs, tmp_path / "s1", questions_per_participant=25, participants=2)
    with pytest.raises(StudyDesignError, match=r"methods: expected method keys .*unknown: \['nope'\]"):
        create_study(runs, tmp_path / "s2", methods=["nope"], questions_per_participant=2, participants=2)
    with pytest.raises(StudyDesignError, match="participants: expected codes"):
        create_study(runs, tmp_path / "s3", questions_per_participant=2, participants=["ok", "../evil"])
    with pytest.raises(StudyDesignError, match="participants: expected unique codes"):
        create_study(runs, tmp_path / "s4", questions_per_participant=2, participants=["a", "a"])
    with pytest.raises(StudyError, match="a study already exists here"):
        create_study(runs, info.path, questions_per_participant=2, participants=2)
    assert not [p for p in tmp_path.iterdir() if p.name not in ("gen",)]  # nothing half-written left behind
    only = create_study(
        runs, tmp_path / "s5", methods=["lora_composer"], questions_per_participant=4, participants=1
    )
    assert {q.label for q in StudyDB(only.path).questions(only.participant_codes[0])} == {"lora_composer"}


def test_refusals(study) -> None:
    db = StudyDB(study.path)
    with pytest.raises(AccessDenied, match="unknown participant code"):
        db.questions("zed")
    with pytest.raises(AccessDenied, match="wrong admin token"):
        db.check_admin("not-the-token")
    with pytest.raises(AccessDenied, match="wrong admin token"):
        db.check_admin("")
    db.check_admin(study.admin_token)
    with pytest.raises(AccessDenied, match="not one of participant 'ann'"):
        db.submit("ann", 999, 3, 3)
    with pytest.raises(ValueError, match="'image_alignment': expected an integer rating 1-5"):
        db.submit("ann", 1, 3, 6)
    with pytest.raises(StudyError, match="not a study folder"):
        StudyDB(study.path / "nope")


def test_answer_resume_and_no_double(study) -> None:
    db = StudyDB(study.path)
    first, second = db.questions("ann")[:2]
    assert db.next_question("ann") == first
    assert db.submit("ann", first.id, 4, 2) is True
    assert db.submit("ann", first.id, 1, 1) is False  # a repeated submit neither doubles nor overwrites
    assert db.next_question("ann").id == second.id  # resume where the participant stopped
    assert db.progress("ann").answered == 1 and db.progress("ben").answered == 0
    rows = db.answers()
    assert [(r["participant"], r["question"], r["text_alignment"], r["image_alignment"]) for r in rows] == [
        ("ann", first.id, 4, 2)
    ]


def _writer(args: tuple[str, list[str], int]) -> int:
    folder, codes, worker = args
    db = StudyDB(folder)
    stored = 0
    for code in codes:
        for q in db.questions(code):
            stored += db.submit(code, q.id, (q.id + worker) % 5 + 1, (q.id * 3) % 5 + 1)
    return stored


def test_many_writers_lose_and_double_nothing(runs: list[Path], tmp_path: Path) -> None:
    codes = [f"p{i:02d}" for i in range(8)]
    info = create_study(runs, tmp_path / "busy", questions_per_participant=12, participants=codes, seed=3)
    jobs = [(str(info.path), codes[w % 8 :] + codes[: w % 8], w) for w in range(8)]  # every worker writes all
    with multiprocessing.get_context("fork").Pool(8) as pool:
        stored = pool.map(_writer, jobs)
    rows = StudyDB(info.path).answers()
    pairs = Counter((r["participant"], r["question"]) for r in rows)
    assert sum(stored) == len(rows) == 8 * 12  # each answer stored exactly once, by exactly one writer
    assert set(pairs.values()) == {1} and len(pairs) == 96


def test_table3_matches_hand_computation() -> None:
    rows = []
    ratings = {("A", 2): [5, 4, 4], ("A", 3): [3, 5], ("B", 2): [1, 2, 2], ("B", 3): [2]}
    qid = 0
    for (label, n), values in ratings.items():
        for v in values:
            qid += 1
            rows.append(
                {
                    "participant": "p",
                    "question": qid,
                    "label": label,
                    "n_concepts": n,
                    "text_alignment": v,
                    "image_alignment": 6 - v,
                }
            )
    table = table3(answers_frame(rows))
    a_all = [5, 4, 4, 3, 5]
    assert table.loc["A", ("all", "Text-to-Image", "mean")] == pytest.approx(statistics.mean(a_all))
    assert table.loc["A", ("all", "Text-to-Image", "ci95")] == pytest.approx(
        1.959964 * statistics.stdev(a_all) / len(a_all) ** 0.5, rel=1e-5
    )
    assert table.loc["A", ("all", "Image-to-Image", "mean")] == pytest.approx(6 - statistics.mean(a_all))
    assert table.loc["B", ("2 concepts", "Text-to-Image", "mean")] == pytest.approx(5 / 3)
    assert table.loc["B", ("3 concepts", "Text-to-Image", "n")] == 1
    assert np.isnan(table.loc["B", ("3 concepts", "Text-to-Image", "ci95")])
    assert mean_ci([])[2] == 0


def test_agreement_matches_published_example() -> None:
    # Krippendorff's example (3 coders, 15 units) from the krippendorff package's README:
    # alpha nominal = 0.691, interval = 0.811.
    nan = np.nan
    data = [
        [nan, nan, nan, nan, nan, 3, 4, 1, 2, 1, 1, 3, 3, nan, 3],
        [1, nan, 2, 1, 3, 3, 4, 3, nan, nan, nan, nan, nan, nan, nan],
        [nan, nan, 2, 1, 3, 4, 4, nan, 2, 1, 1, 3, 3, nan, 4],
    ]
    rows = [
        {
            "participant": f"r{r}",
            "question": u,
            "label": "m",
            "n_concepts": 2,
            "text_alignment": int(v),
            "image_alignment": int(v),
        }
        for r, line in enumerate(data)
        for u, v in enumerate(line)
        if not np.isnan(v)
    ]
    frame = answers_frame(rows)
    assert agreement(frame, level="nominal")["Text-to-Image"] == pytest.approx(0.691, abs=5e-4)
    assert agreement(frame, level="interval")["Image-to-Image"] == pytest.approx(0.811, abs=5e-4)
    assert np.isnan(agreement(frame.iloc[:1])["Text-to-Image"])  # one rating: no agreement to measure


def test_export_csv(study, tmp_path: Path) -> None:
    db = StudyDB(study.path)
    for q in db.questions("ben")[:3]:
        db.submit("ben", q.id, 5, 1)
    out = tmp_path / "answers.csv"
    assert export_csv(study.path, out) == 3
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {r["participant"] for r in rows} == {"ben"}
    assert {r["text_alignment"] for r in rows} == {"5"} and all(r["method"] and r["scene"] for r in rows)


def test_catalog_refuses_paths_outside_runs(runs: list[Path], tmp_path: Path) -> None:
    catalog = RunCatalog(runs)
    item = next(it for it in catalog.items() if it.ok)
    assert catalog.open_image(item).size == (64, 64)
    for bad in (
        "../run_b/manifest.json",
        "/etc/passwd",
        "manifest.json/../../studytoy.yaml",
        "items/none.png",
    ):
        with pytest.raises(AccessError):
            catalog.image_path("run_a", bad)
    with pytest.raises(AccessError, match="not one of the runs"):
        catalog.run("elsewhere")
    with pytest.raises(AccessError, match="not one of the run folders"):
        catalog.run_at(tmp_path)


def test_dashboard_command_and_config(runs: list[Path], tmp_path: Path) -> None:
    argv = dashboard_command(runs, tmp_path / "study", port=8765)
    assert argv[1:4] == ["-m", "lcbench.dashboard.serve", "run"] and Path(argv[4]).name == "app.py"
    assert argv[argv.index("--client.toolbarMode") + 1] == "minimal"  # no Deploy button, no main menu
    assert argv[argv.index("--server.port") + 1] == "8765"
    after = argv[argv.index("--") + 1 :]
    config = app_config(after, environ={})
    assert config.runs == tuple(r.resolve() for r in runs) and config.study == (tmp_path / "study").resolve()
    env = app_config([], environ={ENV_RUNS: str(runs[0])})
    assert env.runs == (runs[0].resolve(),) and env.study is None


def test_a_small_run_fits_without_options_and_references_stay_out(runs: list[Path], tmp_path: Path) -> None:
    # a calibration reference in one run: never a question unless asked for by name
    copy = tmp_path / "with_ref"
    shutil.copytree(runs[1], copy)
    store = RunStore(copy)
    manifest = store.read_manifest()
    manifest["methods"]["ref-oracle"] = {"name": "ref-oracle", "params": {}, "reference": "oracle"}
    store.write_manifest(manifest)
    for record in list(store.records()):
        store.write_item(ItemKey("ref-oracle", record.key.scene, record.key.index), record.seed,
                         Image.new("RGB", (64, 64)), {"status": "ok"})
    info = create_study([runs[0], copy], tmp_path / "fits", participants=["ann"])
    assert info.questions == 24  # 3 methods x 4 scenes x 2 seeds: every usable image, below the default 60
    labels = {q.label for q in StudyDB(info.path).questions("ann")}
    assert labels == {"lora_composer", "mix_of_show", "paint_by_example"}


def test_study_create_command_says_which_option_to_pass(runs: list[Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from lcbench.cli import main

    assert main(["study", "create", *map(str, runs), "--out", str(tmp_path / "a"), "--participants", "2"]) == 0
    assert "(24 questions per participant)" in capsys.readouterr().out
    assert main(["study", "create", *map(str, runs), "--out", str(tmp_path / "b"), "--questions", "60"]) == 2
    err = capsys.readouterr().err
    assert "expected at most 24" in err and "pass --questions 24" in err
