"""Streamlit dashboard: results of runs and the user study.

Start it with ``bench dashboard RUN_DIR ... [--study STUDY_DIR]`` or
``streamlit run dashboard.py -- --run RUN_DIR [--run RUN_DIR ...] [--study STUDY_DIR]``.
"""

import sys

from lcbench.dashboard.app import main
from lcbench.dashboard.launch import app_config

main(app_config(sys.argv[1:]))
