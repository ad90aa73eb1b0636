"""User studies over runs (Table 3) and the dashboard's building blocks.

Public API for the CLI: :func:`create_study`, :func:`export_csv`.
"""

from lcbench.study.analysis import agreement, answers_frame, table3
from lcbench.study.create import StudyInfo, create_study
from lcbench.study.db import AccessDenied, StudyDB, StudyError
from lcbench.study.design import StudyDesignError
from lcbench.study.export import export_csv

__all__ = [
    "AccessDenied",
    "StudyDB",
    "StudyDesignError",
    "StudyError",
    "StudyInfo",
    "agreement",
    "answers_frame",
    "create_study",
    "export_csv",
    "table3",
]
