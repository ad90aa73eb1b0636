"""The dashboard's front door: which views exist for the folders the app was started with.

``streamlit run`` executes this file (``bench dashboard`` starts it so); the folders come after ``--``.
"""

from __future__ import annotations

import json
import sys

import streamlit as st

from lcbench.dashboard.data import get_catalog
from lcbench.dashboard.launch import AppConfig, app_config
from lcbench.study.db import StudyDB

VIEW_STUDY = "User study"
VIEW_ADMIN = "Study admin"
VIEW_RESULTS = "Results"


def study_runs(db: StudyDB) -> list[str]:
    """The run folders a study was made from (as recorded at creation)."""
    return list(json.loads(db.meta().get("runs", "{}")).values())


def main(config: AppConfig) -> None:
    """Render the app. With a study: participant and admin views (results only behind the admin token).

    Without one: the results view. Participants never see the results view, so method names stay hidden.
    """
    st.set_page_config(page_title="Multi-concept bench", layout="wide")
    if config.study is None:
        if not config.runs:
            st.error("No runs given: start the app with `bench dashboard RUN_DIR ...`.")
            return
        from lcbench.dashboard.results import render_results

        render_results(get_catalog(list(config.runs)))
        return

    db = StudyDB(config.study)
    recorded = study_runs(db)
    catalog = get_catalog(list(dict.fromkeys([*map(str, config.runs), *recorded])))
    with db.connect() as con:
        run_paths = {row["id"]: row["run_path"] for row in con.execute("SELECT id, run_path FROM questions")}
    view = st.sidebar.radio("View", [VIEW_STUDY, VIEW_ADMIN], key="view")
    from lcbench.dashboard.study_views import render_admin, render_participant

    if view == VIEW_STUDY:
        render_participant(db, catalog, run_paths)
        return
    render_admin(db, catalog)
    if st.session_state.get("admin_token") and _admin_ok(db):
        # the results view is built only when the admin opens it
        if st.toggle("Show the automatic scores and images of the study's runs", value=False, key="admin_results"):
            from lcbench.dashboard.results import render_results

            render_results(catalog)


def _admin_ok(db: StudyDB) -> bool:
    try:
        db.check_admin(st.session_state.get("admin_token", ""))
    except PermissionError:
        return False
    return True


if __name__ == "__main__":
    main(app_config(sys.argv[1:]))
