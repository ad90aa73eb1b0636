"""``bench study export``: every answer as one CSV row."""

from __future__ import annotations

import csv
from pathlib import Path

from bench.store import atomic_write_bytes
from lcbench.study.db import StudyDB

EXPORT_COLUMNS = (
    "answer_id",
    "participant",
    "position",
    "question",
    "run",
    "method",
    "label",
    "scene",
    "index",
    "seed",
    "n_concepts",
    "style",
    "image",
    "text_alignment",
    "image_alignment",
    "answered_at",
)


def export_csv(study_path: str | Path, out_csv: str | Path) -> int:
    """Write every answer of the study to ``out_csv`` (written atomically); return the number of rows."""
    import io

    rows = StudyDB(study_path).answers()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(Path(out_csv), buffer.getvalue().encode("utf-8"))
    return len(rows)
