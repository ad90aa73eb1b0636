"""The baselines' method declarations: names, descriptions, defaults, deviations and availability checks.

Every ``bench`` command imports the baselines plugin, and the plugin imports only these modules: they
import no torch, diffusers, transformers or open_clip, and no implementation module (which import their
declarations from here). Each ``method_spec(create)`` takes the factory that makes the method: the plugin
passes one that imports the implementation when called; an implementation module passes its class.
Availability checks stay light (file checks, ``importlib.util.find_spec``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bench.methods import Method

Factory = Callable[[Mapping[str, Any]], Method]
