"""The trained toy world's runtime: model configs and committed weights, the toy CLIP, the per-box
classifier, the world's renderer and its concepts, registered as a plugin (``toyworld.plugin``).

Its trainers and quality gates are developer tools in ``toytrain``.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).with_name("weights")
