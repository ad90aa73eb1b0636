"""``python -m bench`` (also what ``accelerate launch -m bench`` runs)."""

import sys

from bench.cli import main

sys.exit(main())
