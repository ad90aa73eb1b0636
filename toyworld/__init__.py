"""The trained toy world's runtime: model configs and committed weights, the toy CLIP, the per-box
classifier, the world's renderer and its concepts, registered as a plugin (``toyworld.plugin``).

Its trainers and quality gates are developer tools in ``toytrain``.
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).with_name("weights")
# The noise schedules and UNet sizes a toy base can be trained with (``toyworld.models.SCHEDULES`` and
# ``UNET_SIZES``), named here so that the command line can list them without importing diffusers.
SCHEDULE_NAMES = ("sd1-epsilon", "zero-snr-v")
UNET_SIZE_NAMES = ("small", "wide")
