"""Streamlit dashboard: results of runs and the user study.

Start it with ``bench dashboard RUN_DIR ... [--study STUDY_DIR]`` or
``streamlit run dashboard.py -- --run RUN_DIR [--run RUN_DIR ...] [--study STUDY_DIR]``.
"""

import sys

from bench.study.launch import app_config
from bench.study.ui_app import main

main(app_config(sys.argv[1:]))
