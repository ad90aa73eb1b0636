"""Streamlit AppTest over every view: results (tables, filters, images, drill-down, A/B, seeds),
participant (answer, resume, finish) and admin."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest
from study_sample import RANDOM_METHOD, make_benchmark_run, make_sample_runs

from lcbench.dashboard import data
from lcbench.dashboard.launch import APP_FILE, ENV_RUNS, ENV_STUDY
from lcbench.dashboard.serve import prepare
from lcbench.study import StudyDB, create_study
from reports import load_scores

TIMEOUT = 1800  # a fail-safe: the first run imports every plugin and loads the benchmark run's scores


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_sample_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_benchmark_run(tmp_path_factory.mktemp("bench"), seeds=2)


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
        for kind in ("markdown", "caption", "info", "success", "warning", "error", "subheader", "header")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def _frame(at: AppTest, column: str):
    """The first dataframe on the page that has ``column``."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def test_results_view_without_scores(monkeypatch: pytest.MonkeyPatch, runs: list[Path]) -> None:
    at = _app(monkeypatch, runs)
    assert at.multiselect(key="runs").value == ["run_a", "run_b"]
    assert "No scores yet" in _texts(at)  # the tables section, no scores written for these runs
    at.radio(key="section").set_value("Images")
    _run(at)
    captions = sorted(img.captions[0] for img in at.image)
    assert [c.split(" · ")[0] for c in captions] == ["lora_composer", "mix_of_show", "paint_by_example"]
    assert all(img.proto.imgs[0].url.endswith(".png") for img in at.image)  # lossless PNG, never JPEG
    assert "Prompt: alice and bob together" in _texts(at)  # concept tokens replaced by concept names
    plain = [img.proto.imgs[0].url for img in at.image]
    at.toggle(key="boxes").set_value(True)
    boxed = [img.proto.imgs[0].url for img in _run(at).image]
    assert len(boxed) == 3 and boxed != plain  # the box overlay produces new images
    at.multiselect(key="filter_style").set_value(["anime"])
    assert _run(at).selectbox(key="scene").options == ["duo_room"]
    at.multiselect(key="filter_style").set_value(["real", "anime"])
    at.multiselect(key="filter_concepts").set_value([4])
    assert _run(at).selectbox(key="scene").options == ["quad_hall"]
    at.multiselect(key="filter_methods").set_value(["mix_of_show"])
    assert [img.captions[0].split(" · ")[0] for img in _run(at).image] == ["mix_of_show"]
    at.multiselect(key="filter_methods").set_value(["lora_composer", "mix_of_show", "paint_by_example"])
    at.multiselect(key="runs").set_value(["run_b"])
    assert len(_run(at).image) == 1


def test_tile_is_a_nearest_neighbour_png(runs: list[Path]) -> None:
    cat = data.get_catalog(runs)
    item = next(it for it in cat.items() if it.ok)
    png = data.image_bytes(cat, item, zoom=3, boxes=False)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    tile = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    original = np.asarray(cat.open_image(item))
    assert tile.shape == (192, 192, 3)
    assert np.array_equal(tile[::3, ::3], original) and np.array_equal(tile[2::3, 1::3], original)


def _hand_mean(frame, metric: str, method: str) -> float:
    """regions -> image -> scene -> style -> mean of styles, with plain pandas."""
    part = frame[(frame["metric"] == metric) & (frame["method"] == method)]
    images = part.groupby(["scene", "style", "index"])["value"].mean()
    scenes = images.groupby(level=["scene", "style"]).mean()
    return float(scenes.groupby(level="style").mean().mean())


def test_results_tables_filters_and_downloads(monkeypatch: pytest.MonkeyPatch, bench_run: Path) -> None:
    at = _app(monkeypatch, [bench_run])
    table1 = at.dataframe[0].value
    assert "lora-composer" in table1.index and "ref-oracle" in table1.index
    assert list(table1.index).index("ref-oracle") > list(table1.index).index("paint-by-example")  # refs last
    assert table1.loc["ref-oracle", "type"] == "reference (oracle)"
    assert table1.loc[RANDOM_METHOD, "notes"] == "random weights"
    # clip_t does not separate the references in this sample: its columns are left out, with the reason
    assert "Mean-I ↑" in table1.columns and not any(c.startswith(("Mean-T", "Anime-T")) for c in table1.columns)
    assert "clip_t" in " ".join(w.value for w in at.warning)
    frame = load_scores([bench_run])
    expected = _hand_mean(frame, "clip_i", "lora-composer")
    assert table1.loc["lora-composer", "Mean-I ↑"].split(" ± ")[0] == f"{expected:.3f}"
    keys = {b.key for b in at.download_button}
    assert {"dl_table1_csv", "dl_table1_tex", "dl_table2_csv", "dl_per_image_csv", "dl_conventions_csv"} <= keys
    calibration = _frame(at, "result")
    assert calibration.loc["clip_i", "result"] == "pass" and calibration.loc["clip_t", "result"] == "FAIL"
    # kept on request, marked
    at.toggle(key="show_uncalibrated").set_value(True)
    assert "Mean-T ↑ ✗" in _run(at).dataframe[0].value.columns
    # filters apply to the tables: one style, no Mean column; one method, references stay
    at.multiselect(key="filter_style").set_value(["anime"])
    at.multiselect(key="filter_methods").set_value(["lora-composer"])
    narrowed = _run(at).dataframe[0].value
    image_columns = [c for c in narrowed.columns if c.endswith("↑") and ("-I " in c or c.startswith("I-"))]
    assert image_columns == ["Anime-I ↑", "I-norm ↑"]
    assert [r for r in narrowed.index if not r.startswith("ref-")] == ["lora-composer"]
    anime = frame[frame["style"] == "anime"]
    hand = _hand_mean(anime, "clip_i", "lora-composer")
    assert narrowed.loc["lora-composer", "Anime-I ↑"].split(" ± ")[0] == f"{hand:.3f}"
    at.selectbox(key="aggregation").set_value("upstream")
    assert "upstream" in _texts(_run(at))
    at.radio(key="section").set_value("Per scene")
    scenes = _run(at).dataframe[0].value
    assert {s for s, _, _ in scenes.index} == {"anime"} and "clip_i ↑" in scenes.columns
    at.radio(key="section").set_value("Plots")
    assert len(_run(at).image) == 6  # one bar plot per metric (uncalibrated ones are kept, marked)


def test_the_server_reads_the_first_page_before_its_first_visitor(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``bench dashboard``'s server process fills the caches (``serve.prepare`` with the app's arguments):
    the first page then reads no score file. A run it did not prepare is read on its first page."""
    prepared = make_benchmark_run(tmp_path_factory.mktemp("prepared"), seeds=2)
    cold = make_benchmark_run(tmp_path_factory.mktemp("cold"), seeds=2)
    prepare(["--run", str(prepared)])
    reads: list[object] = []
    real = data.load_scores
    monkeypatch.setattr(data, "load_scores", lambda roots: reads.append(roots) or real(roots))
    at = _app(monkeypatch, [prepared])
    assert "ref-oracle" in at.dataframe[0].value.index  # Table 1, with its reference rows
    assert reads == []
    _app(monkeypatch, [cold])
    assert reads == [[str(cold.resolve())]]


def test_images_drill_down_ab_and_seeds(monkeypatch: pytest.MonkeyPatch, bench_run: Path) -> None:
    at = _app(monkeypatch, [bench_run])
    at.radio(key="section").set_value("Images")
    _run(at)
    assert len(at.image) == 17  # 12 methods and 5 references on one scene and seed
    frame = load_scores([bench_run])
    first = at.image[0].captions[0].split(" · ")[0]
    scene, index = at.selectbox(key="scene").value, at.selectbox(key="seed_index").value
    rows = frame[(frame["method"] == first) & (frame["scene"] == scene) & (frame["index"] == index)]
    clip_i = rows[rows["metric"] == "clip_i"]["value"].mean()
    assert f"clip_i: {clip_i:.3f}" in _texts(at)
    at.button(key=f"open_g_bench_run_{first}_{scene}_{index}").click()
    _run(at)
    texts = _texts(at)
    assert f"Drill-down: {first} · {scene}" in texts and "git revision `0123456789abcdef" in texts
    at.button(key="drill_close").click()
    assert "Drill-down" not in _texts(_run(at))
    at.radio(key="section").set_value("A/B")
    _run(at)
    at.selectbox(key="ab_a").set_value("lora-composer")
    at.selectbox(key="ab_b").set_value("mix-of-show")
    _run(at)
    assert [img.captions[0].split(" · ")[0] for img in at.image] == ["A: lora-composer", "B: mix-of-show"]
    diff = _frame(at, "B - A")
    scene, index = at.selectbox(key="ab_scene").value, at.selectbox(key="ab_seed").value

    def mean(method: str) -> float:
        part = frame[(frame["method"] == method) & (frame["scene"] == scene) & (frame["index"] == index)
                     & (frame["metric"] == "clip_i")]
        return float(part["value"].mean())

    assert diff.loc["clip_i", "B - A"] == pytest.approx(mean("mix-of-show") - mean("lora-composer"))
    at.radio(key="section").set_value("Seeds")
    _run(at)
    at.selectbox(key="strip_method").set_value("lora-composer")
    _run(at)
    assert [img.captions[0].split(" · ")[0] for img in at.image] == ["seed index 0", "seed index 1"]


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
    assert "Rating scale:** 1 = not at all, 5 = perfectly" in _texts(at)  # the anchors are on the page
    assert next(r for r in at.radio if r.key.startswith("t2i_")).options == [
        "1 (not at all)", "2", "3", "4", "5 (perfectly)"]
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
    for q in db.questions("ann"):
        db.submit("ann", q.id, 4, 2)
    at = _app(monkeypatch, runs, study.path)
    at.radio(key="view").set_value("Study admin").run()
    at.text_input(key="admin_token").input("wrong").run()
    assert "wrong admin token" in at.error[0].value
    assert len(at.dataframe) == 0
    at.text_input(key="admin_token").input(study.admin_token).run()
    assert not at.exception, at.exception
    # one rater so far: alpha cannot be computed, and the page says why, with n = 0
    alpha = _frame(at, "questions rated by 2+ raters")
    assert list(alpha["questions rated by 2+ raters"]) == [0, 0] and alpha["alpha"].isna().all()
    assert "fewer than two raters share a question" in _texts(at)
    assert "Results" not in _texts(at)  # the results view is not built until the admin opens it
    for q in db.questions("ben"):
        db.submit("ben", q.id, 3, 2 + (q.id % 2))
    _run(at)
    progress = at.dataframe[0].value
    assert list(progress["participant"]) == ["ann", "ben"] and list(progress["answered"]) == [3, 3]
    table = at.dataframe[1].value
    assert set(table.columns) == {"Text-to-Image", "Image-to-Image"} and len(table) >= 1
    assert all("3.50" in v for v in table["Text-to-Image"])  # ann rated 4, ben 3 on every question
    alpha = _frame(at, "questions rated by 2+ raters")
    assert list(alpha["criterion"]) == ["Text-to-Image", "Image-to-Image"]
    assert list(alpha["questions rated by 2+ raters"]) == [3, 3] and list(alpha["ratings on them"]) == [6, 6]
    assert "Metric-human agreement" in _texts(at)
    assert at.download_button
    at.toggle(key="admin_results").set_value(True)
    assert "Results" in _texts(_run(at))
