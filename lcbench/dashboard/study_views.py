"""The user-study views: the participant's questions and the admin's results, each behind its own key."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from lcbench.study.analysis import agreement_table, answers_frame, table3, table3_text
from lcbench.study.db import AccessDenied, Question, StudyDB
from lcbench.study.export import EXPORT_COLUMNS
from lcbench.study.runs import AccessError, RunCatalog

RATING_HELP = "1 = not at all, 5 = perfectly"
RATING_LABELS = {1: "1 (not at all)", 2: "2", 3: "3", 4: "4", 5: "5 (perfectly)"}
T2I_LABEL = "Text-to-image alignment: how well does the image match the prompt?"
I2I_LABEL = "Image-to-image alignment: how much do the characters look like their reference images?"


def study_file(db: StudyDB, relative: str) -> Image.Image:
    """Open a file of the study folder (reference copies), refusing anything outside it."""
    path = (db.folder / relative).resolve()
    if not path.is_relative_to(db.folder) or not path.is_file():
        raise AccessError(f"{relative!r} is not a file of the study")
    with Image.open(path) as image:
        return image.convert("RGB")


def question_image(catalog: RunCatalog, question: Question, run_path: str) -> Image.Image:
    """The generated image of a question, read only from a run folder the app was started with."""
    run = catalog.run_at(run_path)
    with Image.open(catalog.image_path(run.name, question.image)) as image:
        return image.convert("RGB")


def _login(label: str, key: str, password: bool = False) -> str:
    return st.text_input(label, key=key, type="password" if password else "default").strip()


def render_participant(db: StudyDB, catalog: RunCatalog, run_paths: dict[int, str]) -> None:
    """Log a participant in by code, then ask their next unanswered question until all are answered."""
    st.header("User study")
    code = _login("Participant code", key="participant_code")
    if not code:
        st.info(
            "Enter the participant code you were given. "
            "You can stop at any time and resume with the same code."
        )
        return
    try:
        code = db.check_participant(code)
    except AccessDenied as err:
        st.error(str(err))
        return
    progress = db.progress(code)
    st.progress(
        progress.answered / max(1, progress.total), text=f"{progress.answered} of {progress.total} answered"
    )
    question = db.next_question(code)
    if question is None:
        st.success(f"All {progress.total} questions answered. Thank you!")
        return
    st.subheader(f"Question {progress.answered + 1} of {progress.total}")
    st.markdown("**Reference images of the concepts**")
    columns = st.columns(max(1, len(question.concepts)))
    for column, concept in zip(columns, question.concepts, strict=False):
        refs = [study_file(db, rel) for rel in concept["references"]]
        caption = f"{concept['id']} ({concept['class_name']})"
        if refs:
            column.image(refs, caption=[caption] * len(refs), width=96)
        else:
            column.caption(f"{caption}: no reference image")
    st.markdown(f"**Prompt:** {question.prompt}")
    for concept in question.concepts:
        st.caption(f"{concept['id']}: {concept['prompt']}")
    st.image(question_image(catalog, question, run_paths[question.id]), caption="Generated image", width=384)
    with st.form(key=f"question_{question.id}"):
        st.markdown(f"**Rating scale:** {RATING_HELP}")
        t2i = st.radio(
            T2I_LABEL,
            [1, 2, 3, 4, 5],
            index=None,
            horizontal=True,
            key=f"t2i_{question.id}",
            help=RATING_HELP,
            format_func=RATING_LABELS.__getitem__,
        )
        i2i = st.radio(
            I2I_LABEL,
            [1, 2, 3, 4, 5],
            index=None,
            horizontal=True,
            key=f"i2i_{question.id}",
            help=RATING_HELP,
            format_func=RATING_LABELS.__getitem__,
        )
        submitted = st.form_submit_button("Submit answer")
    if submitted:
        if t2i is None or i2i is None:
            st.warning("Please give both ratings before submitting.")
            return
        db.submit(code, question.id, int(t2i), int(i2i))
        st.rerun()


def render_admin(db: StudyDB, catalog: RunCatalog | None = None) -> None:
    """Progress per participant, Table 3, agreement and the CSV download, behind the admin token."""
    st.header("Study admin")
    token = _login("Admin token", key="admin_token", password=True)
    if not token:
        st.info("Enter the admin token printed by `bench study create`.")
        return
    try:
        db.check_admin(token)
    except AccessDenied as err:
        st.error(str(err))
        return
    progress = db.all_progress()
    st.subheader("Progress per participant")
    st.dataframe(
        [
            {
                "participant": p.participant,
                "answered": p.answered,
                "total": p.total,
                "done": p.done,
                "last answer": p.last_answer_at or "",
            }
            for p in progress
        ],
        hide_index=True,
    )
    answers = answers_frame(db.answers())
    st.subheader("Table 3: mean rating ± 95% CI per method")
    if answers.empty:
        st.info("No answers yet.")
        return
    table = table3(answers)
    groups = list(dict.fromkeys(table.columns.get_level_values(0)))
    group = st.selectbox("Scenes", groups, key="table3_group")
    st.dataframe(table3_text(table, group))
    render_agreement(answers)
    render_metric_agreement(answers, catalog)
    csv = answers.reindex(columns=list(EXPORT_COLUMNS)).to_csv(index=False)
    st.download_button(
        "Download answers (CSV)",
        csv,
        file_name=f"{Path(db.folder).name}-answers.csv",
        mime="text/csv",
        key="download_csv",
    )


def render_agreement(answers: pd.DataFrame) -> None:
    """Krippendorff's alpha per criterion with its n, and a sentence wherever it cannot be computed."""
    st.subheader("Inter-rater agreement (Krippendorff's alpha, ordinal)")
    rows = agreement_table(answers)
    st.dataframe(
        [
            {
                "criterion": r["criterion"],
                "alpha": None if r["alpha"] != r["alpha"] else round(r["alpha"], 3),
                "questions rated by 2+ raters": r["questions"],
                "ratings on them": r["ratings"],
                "raters": r["raters"],
            }
            for r in rows
        ],
        hide_index=True,
        key="agreement",
    )
    for r in rows:
        if r["note"]:
            st.info(f"{r['criterion']}: alpha {r['note']}.")


def render_metric_agreement(answers: pd.DataFrame, catalog: RunCatalog | None) -> None:
    """Metric-human agreement: how well the automatic scores of the rated images follow the ratings.

    Filled by ``reports.agreement``: its ``metric_human_agreement(answers, run_roots)`` returns a table that
    is shown here; until that module (or function) exists this section says so and shows nothing else.
    """
    import importlib
    import importlib.util

    st.subheader("Metric-human agreement")
    if importlib.util.find_spec("reports.agreement") is None:
        st.caption("Not available in this version (no reports.agreement module).")
        return
    compute = getattr(importlib.import_module("reports.agreement"), "metric_human_agreement", None)
    if compute is None:
        st.caption("Not available in this version (reports.agreement has no metric_human_agreement).")
        return
    roots = [str(run.root) for run in catalog.runs.values()] if catalog is not None else []
    st.dataframe(compute(answers, roots), key="metric_agreement")
