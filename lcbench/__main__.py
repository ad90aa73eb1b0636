"""``python -m lcbench`` (also what ``accelerate launch -m lcbench`` runs): the ``bench`` command."""

import sys

from lcbench.cli import main

sys.exit(main())
