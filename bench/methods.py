"""What a method plugin is: a factory with defaults that makes objects that turn a scene into an image."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # only for annotations: a plugin that declares methods imports no image or model library
    from PIL import Image

    from bench.context import RunContext
    from bench.spec import DatasetSpec, Scene


@dataclass
class Generation:
    """A method's output for one (scene, seed): the image and a record of what it really did.

    ``record`` holds what the method reports about this image (resolved settings, schedules, losses);
    the runner adds the parameters and the method's deviations from upstream (``MethodSpec.deviations``).
    """

    image: Image.Image
    record: dict[str, Any] = field(default_factory=dict)


class Method(Protocol):
    """A ready method: models loaded through the run context, parameters fixed."""

    def generate(self, scene: Scene, seed: int, ctx: RunContext) -> Generation:
        """Make the image of ``scene`` for ``seed``."""
        ...


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: name, defaults, and how to make it.

    ``create(params)`` receives the defaults merged with the user's overrides. ``unavailable(params,
    dataset)`` returns None when the method can run here with those parameters on that dataset (a
    :class:`~bench.spec.DatasetSpec`, or None when no dataset is chosen, e.g. ``bench list``), or the
    reason and the exact steps to set it up; a one-argument ``unavailable(params)`` works too (see
    :meth:`availability`). ``skip_scene(params, scene)`` returns None for a scene the method runs, or why it
    leaves the scene out (the runner plans no image of it and the manifest says why). ``reference`` marks the
    calibration's reference images (``oracle``, ``floor`` or ``probe``): not a method under test, made by
    ``bench score`` beside the methods and shown apart in every table.

    A plugin module is imported by every ``bench`` command, so ``unavailable`` and ``skip_scene`` must stay
    light (no torch or diffusers import), and ``create`` should import the implementation when called.
    """

    name: str
    description: str
    create: Callable[[Mapping[str, Any]], Method]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    deviations: tuple[str, ...] = ()
    unavailable: Callable[..., str | None] = staticmethod(lambda params, dataset=None: None)  # type: ignore[assignment]
    reference: str | None = None
    skip_scene: Callable[[Mapping[str, Any], Scene], str | None] | None = None

    def availability(self, params: Mapping[str, Any], dataset: DatasetSpec | None = None) -> str | None:
        """None when the method can run with ``params`` on ``dataset``, else the reason and setup steps.

        ``unavailable`` is called with the dataset when it takes two arguments, else with ``params`` alone.
        """
        if _takes_two(self.unavailable):
            return self.unavailable(params, dataset)
        return self.unavailable(params)

    def skipped_scenes(
        self, params: Mapping[str, Any], dataset: DatasetSpec, scene_ids: Iterable[str]
    ) -> dict[str, str]:
        """``{scene id: reason}`` for the given scenes this method leaves out (empty without ``skip_scene``)."""
        if self.skip_scene is None:
            return {}
        skipped = {}
        for scene_id in scene_ids:
            reason = self.skip_scene(params, dataset.scenes[scene_id])
            if reason:
                skipped[scene_id] = reason
        return skipped

    def resolve_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults merged with overrides; an unknown parameter is an error."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method '{self.name}': unknown parameter '{unknown[0]}'; expected one of {sorted(self.defaults)}"
            )
        params = dict(self.defaults)
        for key, value in overrides.items():
            params[key] = _coerce_like(self.defaults[key], value, f"{self.name}.{key}")
        return params

    def key(self, params: Mapping[str, Any]) -> str:
        """The method's identity in a run store: its name, plus a hash when parameters differ from defaults."""
        changed = {k: v for k, v in params.items() if self.defaults.get(k) != v}
        if not changed:
            return self.name
        digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]
        return f"{self.name}@{digest}"


def _takes_two(function: Callable[..., Any]) -> bool:
    """Whether ``function`` accepts two positional arguments (``unavailable(params, dataset)``)."""
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): call it the old way
        return False
    return True


def _coerce_like(default: Any, value: Any, where: str) -> Any:
    """Convert a command-line string to the type of the parameter's default."""
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return json.loads(value)
    except ValueError as err:
        raise ValueError(f"parameter '{where}': expected a value like {default!r}, got {value!r}") from err


class NonFiniteOutput(FloatingPointError):
    """A method's latents or image contain NaN or infinity."""


def check_finite(tensor: Any, what: str) -> None:
    """Raise NonFiniteOutput when ``tensor`` holds NaN or infinity (the runner records the item as 'nan')."""
    import torch

    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteOutput(f"{what} contains NaN or infinity")
