"""``python -m lcbench.dashboard.serve run APP [options] -- ARGS``: Streamlit's command line, in a process that
has imported the plugins and the app's modules first, and read what the results view's first page shows.

Streamlit runs the app's script in this same process, so what is imported and cached here is there once,
before the server answers its first request (the plugin manager imports every method plugin, some of them
slow to import; the runs' scores and tables take a second or two to read), instead of during a visitor's
first page. The caches are keyed on the files' modification times, so a run scored later is read again.
"""

from __future__ import annotations

import sys

BARE_MODE_LOGGERS = ("scriptrunner_utils.script_run_context", "caching.cache_data_api")


def prepare(app_args: list[str] | None = None) -> None:
    """Import the plugins (through the plugin manager) and the libraries the app's pages use; with the app's
    arguments (``--run DIR`` ..., no study), also read the results view's first page into the caches."""
    from bench.plugins import plugin_manager, registered_metrics

    try:
        registered_metrics(plugin_manager())
    except Exception as err:  # noqa: BLE001 - the app reports plugin errors where it uses them
        print(f"dashboard: plugins not loaded at start ({type(err).__name__}: {err})", file=sys.stderr)
    import matplotlib  # noqa: F401 - the plots
    import pandas  # noqa: F401

    if app_args is not None:
        _fill_caches(app_args)


def _fill_caches(app_args: list[str]) -> None:
    import importlib
    import logging

    # no script runs yet: Streamlit's caches warn about the missing script context and runtime (Streamlit
    # sets its loggers' levels when it first imports their modules, so those come first)
    quiet = []
    for name in BARE_MODE_LOGGERS:
        importlib.import_module(f"streamlit.runtime.{name}")
        quiet.append(logging.getLogger(f"streamlit.runtime.{name}"))
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        from lcbench.dashboard.data import get_catalog
        from lcbench.dashboard.launch import app_config
        from lcbench.dashboard.results import fill_first_page_caches

        config = app_config(app_args)
        if config.study is None and config.runs:
            fill_first_page_caches(get_catalog(list(config.runs)))
    except Exception as err:  # noqa: BLE001 - the app reports unreadable runs on its page
        print(f"dashboard: first page not prepared ({type(err).__name__}: {err})", file=sys.stderr)
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


def main(argv: list[str]) -> int:
    """Prepare, then hand ``argv`` to Streamlit's command line."""
    prepare(argv[argv.index("--") + 1 :] if "--" in argv else None)
    from streamlit.web import cli

    sys.argv = ["streamlit", *argv]
    return int(cli.main() or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
