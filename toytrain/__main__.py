"""``python -m toytrain STAGE``: train one stage of the toy world."""

from toytrain.cli import main

main()
