"""Reports: Table 1/2, per-scene breakdown, calibration check, bar plots and image grids, read from ``RUN/scores``."""

from reports.calibration import calibration_check
from reports.grids import image_grid
from reports.load import load_scores
from reports.render import ReportOptions, build_tables, write_report
from reports.tables import DEFAULT_ABLATION, ScoreTable, overview, per_scene, table1, table2

__all__ = [
    "DEFAULT_ABLATION", "ReportOptions", "ScoreTable", "build_tables", "calibration_check", "image_grid",
    "load_scores", "overview", "per_scene", "table1", "table2", "write_report",
]  # fmt: skip
