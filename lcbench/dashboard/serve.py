"""``python -m lcbench.dashboard.serve run APP [options] -- ARGS``: Streamlit's command line, in a process that
has imported the plugins and the app's modules first.

Streamlit runs the app's script in this same process, so what is imported here is imported once, before
the server answers its first request (the plugin manager imports every method plugin, some of them slow to
import), instead of during a visitor's first page.
"""

from __future__ import annotations

import sys


def prepare() -> None:
    """Import the plugins (through the plugin manager) and the libraries the app's pages use."""
    from bench.plugins import plugin_manager, registered_metrics

    try:
        registered_metrics(plugin_manager())
    except Exception as err:  # noqa: BLE001 - the app reports plugin errors where it uses them
        print(f"dashboard: plugins not loaded at start ({type(err).__name__}: {err})", file=sys.stderr)
    import matplotlib  # noqa: F401 - the plots; the app's own modules load on the first page (they need the runtime)
    import pandas  # noqa: F401


def main(argv: list[str]) -> int:
    """Prepare, then hand ``argv`` to Streamlit's command line."""
    prepare()
    from streamlit.web import cli

    sys.argv = ["streamlit", *argv]
    return int(cli.main() or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
