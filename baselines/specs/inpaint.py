"""What the sequential-inpainting baselines (Paint-by-Example, AnyDoor) share in their declarations.

The implementation of the protocol is :mod:`baselines.inpaint`; this module holds its parameters,
deviations and the style rule, and imports no model library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STYLES = ("real", "anime")

BACKGROUND_DEFAULTS: dict[str, Any] = {
    "background_prompt": "class_words",
    "background_steps": 50,
    "background_guidance": 7.5,
    "reference": "seed",
}

# The LoRA-Composer paper runs the inpainting baselines on real-style layouts only (Appendix B: they "focus
# exclusively on real object inpainting"; Table 1 shows '-' in their anime columns).
STYLE_DEFAULTS: dict[str, Any] = {"styles": "real"}

BACKGROUND_DEVIATIONS = (
    "Background: the base model alone on the global prompt with concept tokens replaced by class words "
    "(LoRA-Composer gen_basemodel_bg.py); scene concepts (e.g. a pyramid ED-LoRA) are rendered by class word "
    "too, not with their ED-LoRA (gen_edlora_bg.py).",
    "Boxes are inpainted in spec order; a later box overwrites an earlier one where boxes overlap.",
    "Per-box seed = (seed + 1000 * (box index + 1)) mod 2^31; reference image = sorted(refs)[box seed % n] "
    "(rule 'seed') or the first by name (rule 'first').",
)
STYLE_DEVIATION = (
    "Scenes: real style only by default (styles='real'), as the LoRA-Composer paper (Appendix B; '-' in Table "
    "1's anime columns); styles='all' or 'real,anime' runs the others too. The run's manifest names every "
    "scene left out and why."
)


def run_styles(params: Mapping[str, Any], method: str) -> tuple[str, ...]:
    """The styles of scenes the method runs on, from its ``styles`` parameter ('all' or comma-separated)."""
    raw = str(params.get("styles", "all")).strip()
    if raw == "all":
        return STYLES
    styles = tuple(s.strip() for s in raw.split(",") if s.strip())
    unknown = [s for s in styles if s not in STYLES]
    if not styles or unknown:
        raise ValueError(f"method '{method}': parameter 'styles': expected 'all' or comma-separated styles of "
                         f"{list(STYLES)}, got {raw!r}")
    return styles


def style_skip(method: str) -> Any:
    """A ``skip_scene(params, scene)`` for a method that runs only on the styles of its ``styles`` parameter."""

    def skip_scene(params: Mapping[str, Any], scene: Any) -> str | None:
        styles = run_styles(params, method)
        if scene.style in styles:
            return None
        return (f"{method} runs on {'/'.join(styles)}-style scenes (parameter styles={params.get('styles')!r}), as "
                f"the LoRA-Composer paper ('-' in Table 1's anime columns); this scene is {scene.style!r}. "
                f"--param {method}.styles=all runs it")

    return skip_scene
