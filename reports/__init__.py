"""Reports: Table 1/2, per-scene breakdown, bar plots and image grids, read from ``RUN/scores``."""

from reports.grids import image_grid
from reports.load import load_scores
from reports.render import write_report
from reports.tables import DEFAULT_ABLATION, per_scene, table1, table2

__all__ = ["DEFAULT_ABLATION", "image_grid", "load_scores", "per_scene", "table1", "table2", "write_report"]
