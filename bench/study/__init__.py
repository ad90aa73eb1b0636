"""User studies over runs (Table 3) and the dashboard's building blocks.

Public API for the CLI: :func:`create_study`, :func:`export_csv`, :func:`dashboard_command`.
"""

from bench.study.analysis import agreement, answers_frame, table3
from bench.study.create import StudyInfo, create_study
from bench.study.db import AccessDenied, StudyDB, StudyError
from bench.study.design import StudyDesignError
from bench.study.export import export_csv
from bench.study.launch import dashboard_command

__all__ = [
    "AccessDenied",
    "StudyDB",
    "StudyDesignError",
    "StudyError",
    "StudyInfo",
    "agreement",
    "answers_frame",
    "create_study",
    "dashboard_command",
    "export_csv",
    "table3",
]
