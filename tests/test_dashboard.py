"""Streamlit AppTest over every view: results, participant (answer, resume, finish) and admin."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from study_sample import make_sample_runs, write_sample_scores

from lcbench.dashboard.launch import APP_FILE, ENV_RUNS, ENV_STUDY
from lcbench.study import StudyDB, create_study

TIMEOUT = 60


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_sample_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture()
def study(runs: list[Path], tmp_path: Path):
    return create_study(
        runs, tmp_path / "study", questions_per_participant=3, participants=["ann", "ben"], seed=5
    )


def _app(monkeypatch: pytest.MonkeyPatch, runs: list[Path], study: Path | None = None) -> AppTest:
    monkeypatch.setenv(ENV_RUNS, ":".join(map(str, runs)))
    if study is None:
        monkeypatch.delenv(ENV_STUDY, raising=False)
    else:
        monkeypatch.setenv(ENV_STUDY, str(study))
    at = AppTest.from_file(str(APP_FILE), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "success", "warning", "error", "subheader")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_results_view(monkeypatch: pytest.MonkeyPatch, runs: list[Path]) -> None:
    at = _app(monkeypatch, runs)
    assert at.multiselect(key="runs").value == ["run_a", "run_b"]
    assert "No scores yet" in _texts(at)  # no scores written for these runs
    images = at.image
    captions = sorted(img.captions[0] for img in images)
    assert [c.split(" · ")[0] for c in captions] == ["lora_composer", "mix_of_show", "paint_by_example"]
    plain = [img.proto.imgs[0].url for img in images]
    at.toggle(key="boxes").set_value(True).run()
    boxed = [img.proto.imgs[0].url for img in at.image]
    assert len(boxed) == 3 and boxed != plain  # the box overlay produces new images
    at.multiselect(key="filter_style").set_value(["anime"]).run()
    assert at.selectbox(key="scene").options == ["duo_room"]
    at.multiselect(key="filter_style").set_value(["real", "anime"]).run()
    at.multiselect(key="filter_concepts").set_value([4]).run()
    assert at.selectbox(key="scene").options == ["quad_hall"]
    at.multiselect(key="runs").set_value(["run_b"]).run()
    assert len(at.image) == 1 and not at.exception


def test_results_view_with_scores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scored = make_sample_runs(tmp_path)
    for run in scored:
        write_sample_scores(run)
    at = _app(monkeypatch, scored)
    assert "No scores yet" not in _texts(at)
    table1 = at.dataframe[0].value
    assert sorted(table1.index) == ["lora_composer", "mix_of_show", "paint_by_example"]
    assert {"Real-I", "Real-T"} <= set(table1.columns)
    per_image = [c.value for c in at.caption if "clip_i" in c.value]
    assert len(per_image) == 3 and all("clip_t" in c for c in per_image)
    # the side-by-side scores equal the image's own rows (duo_park, seed 0: two regions)
    lc = next(
        c for c in per_image if c == f"clip_i: {0.5 + 0.13 + 0.005:.4g} · clip_t: {0.5 + 0.13 + 0.005:.4g}"
    )
    assert lc


def test_no_runs_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_RUNS, raising=False)
    monkeypatch.delenv(ENV_STUDY, raising=False)
    at = AppTest.from_file(str(APP_FILE), default_timeout=TIMEOUT).run()
    assert "No runs given" in at.error[0].value


def _answer(at: AppTest, t2i: int, i2i: int) -> AppTest:
    next(r for r in at.radio if r.key.startswith("t2i_")).set_value(t2i)
    next(r for r in at.radio if r.key.startswith("i2i_")).set_value(i2i)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def test_participant_flow_answer_resume_finish(
    monkeypatch: pytest.MonkeyPatch, runs: list[Path], study
) -> None:
    at = _app(monkeypatch, runs, study.path)
    assert at.radio(key="view").options == ["User study", "Study admin"]
    assert "Results" not in _texts(at)  # participants never reach the results view
    at.text_input(key="participant_code").input("nobody").run()
    assert "unknown participant code" in at.error[0].value
    at.text_input(key="participant_code").input("ann").run()
    assert "Question 1 of 3" in _texts(at)
    assert len(at.image) >= 2  # reference images and the generated image
    shown = _texts(at)
    assert not any(m in shown for m in ("lora_composer", "mix_of_show", "paint_by_example"))  # blind
    at.button[0].click().run()  # submit without ratings
    assert "give both ratings" in at.warning[0].value
    _answer(at, 4, 2)
    assert "Question 2 of 3" in _texts(at)

    resumed = _app(monkeypatch, runs, study.path)  # a new session: the participant comes back later
    resumed.text_input(key="participant_code").input("ann").run()
    assert "Question 2 of 3" in _texts(resumed) and "1 of 3 answered" in str(resumed.progress[0].proto)
    _answer(resumed, 5, 5)
    _answer(resumed, 1, 3)
    assert "All 3 questions answered" in resumed.success[0].value
    db = StudyDB(study.path)
    assert [(a["text_alignment"], a["image_alignment"]) for a in db.answers()] == [(4, 2), (5, 5), (1, 3)]
    assert db.progress("ben").answered == 0


def test_admin_view(monkeypatch: pytest.MonkeyPatch, runs: list[Path], study) -> None:
    db = StudyDB(study.path)
    for code in ("ann", "ben"):
        for q in db.questions(code):
            db.submit(code, q.id, 3 + (code == "ann"), 2)
    at = _app(monkeypatch, runs, study.path)
    at.radio(key="view").set_value("Study admin").run()
    at.text_input(key="admin_token").input("wrong").run()
    assert "wrong admin token" in at.error[0].value
    assert len(at.dataframe) == 0
    at.text_input(key="admin_token").input(study.admin_token).run()
    assert not at.exception, at.exception
    progress = at.dataframe[0].value
    assert list(progress["participant"]) == ["ann", "ben"] and list(progress["answered"]) == [3, 3]
    table = at.dataframe[1].value
    assert set(table.columns) == {"Text-to-Image", "Image-to-Image"} and len(table) >= 1
    assert all("3.50" in v for v in table["Text-to-Image"])  # ann rated 4, ben 3 on every question
    alpha = at.dataframe[2].value
    assert list(alpha["criterion"]) == ["Text-to-Image", "Image-to-Image"]
    assert at.download_button
    at.selectbox(key="table3_group").set_value(at.selectbox(key="table3_group").options[1]).run()
    assert not at.exception
