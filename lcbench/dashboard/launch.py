"""Starting the dashboard: the server command line, the process that forwards signals to it, and the
app's start-up configuration.

The runs and the study reach the app as arguments after ``--`` (``--run DIR`` repeated, ``--study DIR``)
or, when those are absent, through the environment variables below. The app only ever opens files of
these folders. The server runs in a child process (:mod:`lcbench.dashboard.serve`, which imports the
plugins once before it takes requests); :func:`serve` passes SIGTERM and SIGINT on to it and exits with it
(:mod:`lcbench.processes`), so stopping ``bench dashboard`` never leaves a server behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lcbench.processes import Child, run_children

ENV_RUNS = "BENCH_DASHBOARD_RUNS"  # run folders separated by os.pathsep
ENV_STUDY = "BENCH_DASHBOARD_STUDY"
APP_FILE = Path(__file__).with_name("app.py")


@dataclass(frozen=True)
class AppConfig:
    """The folders the app was started with."""

    runs: tuple[Path, ...]
    study: Path | None


def dashboard_command(
    run_dirs: Sequence[str | Path],
    study: str | Path | None = None,
    port: int = 8501,
    address: str | None = None,
) -> list[str]:
    """The argv that serves the dashboard over ``run_dirs`` (and ``study``): ``streamlit run`` through
    :mod:`lcbench.dashboard.serve`, without Streamlit's toolbar (no Deploy button, no main menu)."""
    argv = [
        sys.executable,
        "-m",
        "lcbench.dashboard.serve",
        "run",
        str(APP_FILE),
        "--server.headless",
        "true",
        "--server.port",
        str(int(port)),
        "--server.runOnSave",
        "false",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    if address:
        argv += ["--server.address", address]
    argv.append("--")
    for run in run_dirs:
        argv += ["--run", str(Path(run).resolve())]
    if study is not None:
        argv += ["--study", str(Path(study).resolve())]
    return argv


def serve(argv: Sequence[str]) -> int:
    """Run the server ``argv`` as a child, pass SIGTERM/SIGINT on to it, wait for it, return its exit status
    (128 + the signal number when a signal killed it, as a shell reports it)."""
    return run_children([Child(argv)])[0]


def app_config(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> AppConfig:
    """Read the app's folders from its arguments (``--run``/``--study``) or else from the environment."""
    parser = argparse.ArgumentParser(prog="dashboard.py", add_help=False)
    parser.add_argument("--run", action="append", default=[])
    parser.add_argument("--study", default=None)
    args, _ = parser.parse_known_args(list(argv))
    runs = list(args.run)
    study = args.study
    if not runs and environ.get(ENV_RUNS):
        runs = [p for p in environ[ENV_RUNS].split(os.pathsep) if p]
    if study is None and environ.get(ENV_STUDY):
        study = environ[ENV_STUDY]
    return AppConfig(
        runs=tuple(Path(r).resolve() for r in runs), study=Path(study).resolve() if study else None
    )
