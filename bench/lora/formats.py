"""LoRA file formats in the wild, converted at the edge into the canonical :class:`ConceptLora`.

Supported layouts (detected from the keys, not the file name):

* **Mix-of-Show ED-LoRA** ``.pth`` / ``.pt``: ``{'params': {'new_concept_embedding': {tok: [16, D]},
  'text_encoder': {...}, 'unet': {...}}}``, loaded with ``torch.load(weights_only=True)`` only.
  Both key spellings: research ``...to_k_lora.down.weight`` and main ``...to_k.lora_down.weight``.
  ED-LoRA applies ``W + up @ down`` (alpha 1, no ``1/r``), so every scale is 1.0.
* **ED-LoRA as safetensors** (this project's spelling): the same nesting flattened with dots,
  ``params.unet.<key>``, ``params.text_encoder.<key>``, ``params.new_concept_embedding.<token>``.
* **diffusers / peft** safetensors: ``unet.<module>.lora.down.weight`` / ``.lora.up.weight``,
  ``.lora_A.weight`` / ``.lora_B.weight``, ``.lora_linear_layer.down/up.weight``, legacy
  ``<attn>.processor.to_q_lora.down.weight``; ``text_encoder.`` keys with or without ``text_model.``.
  Alpha comes from the ``lora_adapter_metadata`` JSON that ``save_lora_weights`` writes
  (``unet.lora_alpha``, ``unet.alpha_pattern``, ...), else from ``<module>.alpha`` keys, else
  alpha = rank (scale 1), as diffusers does.
* **kohya** safetensors: ``lora_unet_<module_with_underscores>.lora_down.weight`` / ``.lora_up.weight``
  / ``.alpha`` and ``lora_te_`` / ``lora_te1_`` text-encoder keys; scale = alpha / rank (1 without alpha).

Canonical keys are module paths: ``down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`` in the
UNet and ``encoder.layers.0.self_attn.q_proj`` in the text encoder (no ``text_model.`` level).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from peft.utils.other import get_pattern_key
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from bench.layers import cross_attention_layers
from bench.lora.canonical import ConceptLora, LoraDelta
from bench.safeload import WeightsFileError, load_weights_only

SUFFIXES = (".safetensors", ".pth", ".pt")
EDLORA, DIFFUSERS, KOHYA = "edlora", "diffusers", "kohya"
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"


class LoraError(ValueError):
    """A LoRA file cannot be used; the message names the file, the key or field, and what was expected."""

    def __init__(self, file: str | Path, field: str, expected: str, got: Any = None):
        self.file, self.field, self.expected, self.got = str(file), field, expected, got
        got_text = "" if got is None else f" (got {got})"
        super().__init__(f"{file}: {field}: expected {expected}{got_text}")


# ----------------------------------------------------------------------------------------------
# Key grammar shared by all formats

# (regex on the full key, part). The module path is group 1; checked in order, first match wins.
_PART_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), part)
    for pattern, part in (
        (r"^(.+)\.lora_down\.weight$", "down"),  # kohya, ED-LoRA main
        (r"^(.+)\.lora_up\.weight$", "up"),
        (r"^(.+)\.lora_linear_layer\.down\.weight$", "down"),  # diffusers text encoder
        (r"^(.+)\.lora_linear_layer\.up\.weight$", "up"),
        (r"^(.+)_lora\.down\.weight$", "down"),  # ED-LoRA research, diffusers attn-procs
        (r"^(.+)_lora\.up\.weight$", "up"),
        (r"^(.+)\.lora\.down\.weight$", "down"),  # diffusers (convert_state_dict_to_diffusers)
        (r"^(.+)\.lora\.up\.weight$", "up"),
        (r"^(.+)\.lora_A(?:\.[\w-]+)?\.weight$", "down"),  # peft, optionally with an adapter name
        (r"^(.+)\.lora_B(?:\.[\w-]+)?\.weight$", "up"),
        (r"^(.+)\.alpha$", "alpha"),
    )
)
_EXPECTED_KEY = (
    "a LoRA key ending in .lora_down.weight/.lora_up.weight, _lora.down.weight/_lora.up.weight, "
    ".lora.down.weight/.lora.up.weight, .lora_linear_layer.down/up.weight, .lora_A/.lora_B.weight or .alpha"
)


def _split_key(key: str) -> tuple[str, str] | None:
    """(module path, 'down' | 'up' | 'alpha') of one LoRA tensor key, or None if it is no LoRA key."""
    for pattern, part in _PART_PATTERNS:
        match = pattern.match(key)
        if match:
            return match.group(1), part
    return None


def _normalize_module(module: str) -> str:
    """Canonical module path: no ``text_model.`` level or legacy ``.processor``; ``to_out.0``."""
    module = module.removeprefix("base_model.model.").removeprefix("text_model.")
    module = module.replace(".processor.", ".")
    if module.endswith(".to_out"):
        module += ".0"
    return module


def _as_matrix(path: Path, key: str, tensor: torch.Tensor) -> torch.Tensor:
    """A LoRA factor as a 2-D matrix (1x1 conv factors are squeezed)."""
    if tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        return tensor.flatten(1)
    if tensor.ndim != 2 or not tensor.is_floating_point():
        raise LoraError(
            path,
            f"key '{key}'",
            "a 2-D float matrix (Linear) or a 1x1 conv kernel",
            f"{tensor.dtype} {list(tensor.shape)}",
        )
    return tensor


def _group_deltas(
    path: Path, section: str, tensors: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, torch.Tensor]]:
    """Group ``{key: tensor}`` into ``{module: {'down', 'up'[, 'alpha']}}``; down and up required."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        split = _split_key(key)
        if split is None:
            raise LoraError(
                path,
                f"{section} key '{key}'",
                _EXPECTED_KEY,
                "a merged full model?" if key.endswith((".weight", ".bias")) else None,
            )
        module, part = split
        if not isinstance(tensor, torch.Tensor):
            raise LoraError(path, f"{section} key '{key}'", "a tensor", type(tensor).__name__)
        groups.setdefault(_normalize_module(module), {})[part] = tensor
    for module, parts in groups.items():
        missing = [p for p in ("down", "up") if p not in parts]
        if missing:
            raise LoraError(
                path,
                f"{section} module '{module}'",
                "both a down and an up weight",
                f"no {missing[0]} weight",
            )
    return groups


def _delta(
    path: Path,
    section: str,
    module: str,
    parts: Mapping[str, torch.Tensor],
    alpha: float | None,
    use_rslora: bool = False,
) -> LoraDelta:
    """One canonical delta; ``alpha=None`` means scale 1 (ED-LoRA, or alpha = rank)."""
    down = _as_matrix(path, f"{section}.{module} down", parts["down"])
    up = _as_matrix(path, f"{section}.{module} up", parts["up"])
    if up.shape[1] != down.shape[0]:
        raise LoraError(
            path,
            f"{section} module '{module}'",
            f"an up weight with {down.shape[0]} columns (the rank of its down weight {list(down.shape)})",
            list(up.shape),
        )
    rank = down.shape[0]
    if alpha is None:
        scale = 1.0
    else:
        scale = float(alpha) / (rank**0.5 if use_rslora else rank)
    return LoraDelta(down=down, up=up, scale=scale)


# ----------------------------------------------------------------------------------------------
# Reading files


def _read_pickle(path: Path, where: str) -> Any:
    """The file's object through ``torch.load(weights_only=True)``; a file carrying code is refused unrun."""
    try:
        return load_weights_only(path)
    except WeightsFileError as exc:
        if exc.carries_code:
            raise LoraError(path, where, f"a file of plain tensors and dicts; {exc.reason}") from exc
        raise LoraError(path, where, "a readable torch .pth/.pt file", exc.detail) from exc


def _read_safetensors(path: Path, where: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path), device="cpu"), metadata
    except Exception as exc:  # safetensors raises SafetensorError / OSError on bad headers
        raise LoraError(path, where, "a readable .safetensors file", f"{type(exc).__name__}: {exc}") from exc


def load_lora(path: str | Path, where: str = "lora") -> ConceptLora:
    """Load a LoRA file of any supported layout (see the module docstring) into the canonical form.

    ``where`` names the field that pointed at the file (e.g. ``concepts.catA.lora``) in error messages.
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise LoraError(
            path, where, f"a LoRA file ending in one of {list(SUFFIXES)}", path.suffix or "no suffix"
        )
    if not path.is_file():
        raise LoraError(path, where, "an existing LoRA file", "no such file")
    if path.suffix.lower() == ".safetensors":
        tensors, metadata = _read_safetensors(path, where)
        return _from_flat(path, where, tensors, metadata)
    obj = _read_pickle(path, where)
    if isinstance(obj, Mapping) and "params" in obj:
        return _from_edlora(path, where, obj["params"])
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _from_flat(path, where, dict(obj), {})
    raise LoraError(
        path,
        where,
        "an ED-LoRA checkpoint {'params': {'new_concept_embedding', 'text_encoder', "
        "'unet'}} or a flat dict of LoRA tensors",
        _describe(obj),
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {sorted(map(str, obj))[:5]}"
    return type(obj).__name__


def _from_flat(
    path: Path, where: str, tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]
) -> ConceptLora:
    """Dispatch a flat ``{key: tensor}`` file on its key prefixes."""
    keys = list(tensors)
    if keys and all(k.startswith("params.") for k in keys):
        nested: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            section, _, rest = key.removeprefix("params.").partition(".")
            nested.setdefault(section, {})[rest] = tensor
        return _from_edlora(path, where, nested)
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        return _from_kohya(path, tensors)
    if keys and any(_split_key(k) for k in keys):
        return _from_diffusers(path, tensors, metadata)
    raise LoraError(
        path,
        where,
        "a known LoRA layout: ED-LoRA (params.*), diffusers/peft (unet.*, "
        "text_encoder.*) or kohya (lora_unet_*, lora_te_*)",
        f"keys like {keys[:3]}" if keys else "no tensors",
    )


# ----------------------------------------------------------------------------------------------
# ED-LoRA

_EDLORA_SECTIONS = ("new_concept_embedding", "text_encoder", "unet")


def _from_edlora(path: Path, where: str, params: Any) -> ConceptLora:
    if not isinstance(params, Mapping):
        raise LoraError(path, f"{where}: params", "a dict", type(params).__name__)
    unknown = sorted(set(map(str, params)) - set(_EDLORA_SECTIONS))
    if unknown or not params:
        raise LoraError(
            path,
            f"{where}: params.{unknown[0] if unknown else ''}",
            f"only the sections {list(_EDLORA_SECTIONS)}",
        )
    sections: dict[str, dict[str, LoraDelta]] = {}
    for section, prefix in (("unet", "unet."), ("text_encoder", "text_encoder.")):
        raw = params.get(section) or {}
        if not isinstance(raw, Mapping):
            raise LoraError(path, f"{where}: params.{section}", "a dict of LoRA tensors", type(raw).__name__)
        groups = _group_deltas(
            path, f"params.{section}", {str(k).removeprefix(prefix): v for k, v in raw.items()}
        )
        sections[section] = {m: _delta(path, section, m, parts, alpha=None) for m, parts in groups.items()}
    embeddings: dict[str, torch.Tensor] = {}
    raw_embeddings = params.get("new_concept_embedding") or {}
    if not isinstance(raw_embeddings, Mapping):
        raise LoraError(
            path,
            f"{where}: params.new_concept_embedding",
            "a dict of token -> [layers, dim] tensor",
            type(raw_embeddings).__name__,
        )
    for token, tensor in raw_embeddings.items():
        field = f"params.new_concept_embedding['{token}']"
        if (
            not isinstance(tensor, torch.Tensor)
            or not tensor.is_floating_point()
            or tensor.ndim not in (1, 2)
        ):
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise LoraError(path, field, "a float tensor [layers, dim] (16 layers for ED-LoRA)", got)
        embeddings[str(token)] = tensor.reshape(-1, tensor.shape[-1])
    return ConceptLora(
        unet=sections["unet"],
        text_encoder=sections["text_encoder"],
        token_embeddings=embeddings,
        source=str(path),
        format=EDLORA,
    )


# ----------------------------------------------------------------------------------------------
# diffusers / peft


def _diffusers_config(path: Path, metadata: Mapping[str, str], component: str) -> dict[str, Any]:
    """The LoraConfig fields that diffusers' ``save_lora_weights`` stored for ``component``."""
    raw = metadata.get(DIFFUSERS_METADATA_KEY)
    if not raw:
        return {}
    try:
        packed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LoraError(path, f"metadata '{DIFFUSERS_METADATA_KEY}'", "valid JSON", str(exc)) from exc
    prefix = f"{component}."
    return {k.removeprefix(prefix): v for k, v in packed.items() if k.startswith(prefix)}


def _component(key: str) -> tuple[str, str]:
    """('unet' | 'text_encoder' | other prefix, key without it)."""
    head, _, rest = key.partition(".")
    if head in ("unet", "text_encoder", "text_encoder_2", "transformer"):
        return head, rest
    if key.startswith(("text_model.", "encoder.layers.")):
        return "text_encoder", key
    return "unet", key


def _from_diffusers(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> ConceptLora:
    by_component: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        component, rest = _component(key)
        if component not in ("unet", "text_encoder"):
            raise LoraError(
                path,
                f"key '{key}'",
                "keys of an SD1.x UNet ('unet.') or text encoder "
                "('text_encoder.'); SDXL / DiT LoRAs are not supported",
                component,
            )
        by_component.setdefault(component, {})[rest] = tensor
    out: dict[str, dict[str, LoraDelta]] = {"unet": {}, "text_encoder": {}}
    for component, part in by_component.items():
        config = _diffusers_config(path, metadata, component)
        groups = _group_deltas(path, component, part)
        for module, parts in groups.items():
            if config.get("lora_alpha") is not None:
                pattern = get_pattern_key(list(config.get("alpha_pattern") or {}), module)
                alpha = (config.get("alpha_pattern") or {}).get(pattern, config["lora_alpha"])
                out[component][module] = _delta(
                    path, component, module, parts, alpha, bool(config.get("use_rslora", False))
                )
            else:
                alpha = float(parts["alpha"]) if "alpha" in parts else None
                out[component][module] = _delta(path, component, module, parts, alpha)
    return ConceptLora(unet=out["unet"], text_encoder=out["text_encoder"], source=str(path), format=DIFFUSERS)


# ----------------------------------------------------------------------------------------------
# kohya

# Module-name atoms that contain an underscore in SD1.x UNets and CLIP text encoders. kohya writes
# module paths with every '.' turned into '_'; these are glued back together, all else is a '.'.
_KOHYA_ATOMS = tuple(
    atom.split("_")
    for atom in sorted(
        (
            "down_blocks",
            "up_blocks",
            "mid_block",
            "transformer_blocks",
            "to_q",
            "to_k",
            "to_v",
            "to_out",
            "proj_in",
            "proj_out",
            "time_emb_proj",
            "conv_in",
            "conv_out",
            "conv_shortcut",
            "conv_norm_out",
            "time_embedding",
            "linear_1",
            "linear_2",
            "text_model",
            "self_attn",
            "q_proj",
            "k_proj",
            "v_proj",
            "out_proj",
            "final_layer_norm",
            "layer_norm1",
            "layer_norm2",
            "token_embedding",
            "position_embedding",
        ),
        key=lambda a: -a.count("_"),
    )
)


def kohya_to_module(name: str) -> str:
    """Turn a kohya name body (``down_blocks_0_attentions_0_..._attn1_to_q``) into a module path."""
    parts = name.split("_")
    out: list[str] = []
    i = 0
    while i < len(parts):
        for atom in _KOHYA_ATOMS:
            if parts[i : i + len(atom)] == atom:
                out.append("_".join(atom))
                i += len(atom)
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def _from_kohya(path: Path, tensors: Mapping[str, torch.Tensor]) -> ConceptLora:
    sections: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}}
    for key, tensor in tensors.items():
        name, dot, rest = key.partition(".")
        if name.startswith("lora_unet_"):
            sections["unet"][kohya_to_module(name.removeprefix("lora_unet_")) + dot + rest] = tensor
        elif name.startswith(("lora_te_", "lora_te1_")):
            body = name.removeprefix("lora_te_").removeprefix("lora_te1_")
            sections["text_encoder"][kohya_to_module(body) + dot + rest] = tensor
        else:
            raise LoraError(
                path,
                f"key '{key}'",
                "a kohya SD1.x key starting with lora_unet_ or lora_te_ (lora_te2_ is SDXL, not supported)",
            )
    out: dict[str, dict[str, LoraDelta]] = {}
    for section, part in sections.items():
        groups = _group_deltas(path, section, part)
        out[section] = {
            m: _delta(path, section, m, parts, float(parts["alpha"]) if "alpha" in parts else None)
            for m, parts in groups.items()
        }
    return ConceptLora(unet=out["unet"], text_encoder=out["text_encoder"], source=str(path), format=KOHYA)


# ----------------------------------------------------------------------------------------------
# Checking a LoRA against the models


def target_shape(module: nn.Module) -> tuple[int, int] | None:
    """``(out_features, in_features)`` of a Linear or 1x1 Conv2d (peft-wrapped or not), else None."""
    module = getattr(module, "base_layer", module)
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
        return module.out_channels, module.in_channels
    return None


def _check_deltas(
    lora: ConceptLora, where: str, section: str, model: nn.Module | None, deltas: Mapping[str, LoraDelta]
) -> None:
    if not deltas:
        return
    if model is None:
        raise LoraError(
            lora.source, f"{where}: {section}", f"a {section} model to apply {len(deltas)} deltas to", "None"
        )
    for key, delta in deltas.items():
        try:
            module = model.get_submodule(key)
        except AttributeError:
            raise LoraError(
                lora.source, f"{where}: {section} key '{key}'", f"a module of the {section}", "no such module"
            ) from None
        shape = target_shape(module)
        if shape is None:
            raise LoraError(
                lora.source,
                f"{where}: {section} key '{key}'",
                "a Linear or 1x1 Conv2d module",
                type(module).__name__,
            )
        out_f, in_f = shape
        if delta.down.shape[1] != in_f or delta.up.shape[0] != out_f:
            raise LoraError(
                lora.source,
                f"{where}: {section} key '{key}'",
                f"down [rank, {in_f}] and up [{out_f}, rank]",
                f"down {list(delta.down.shape)}, up {list(delta.up.shape)}",
            )


def check_lora_fits(
    lora: ConceptLora, unet: nn.Module | None, text_encoder: nn.Module | None, where: str = "lora"
) -> None:
    """Raise :class:`LoraError` unless every delta targets an existing Linear / 1x1 conv of the right shape.

    Token embeddings must have the text encoder's hidden size and 1 or one-per-cross-attention-layer rows.
    A model given as None is not checked (but deltas for it are an error).
    """
    _check_deltas(lora, where, "unet", unet, lora.unet)
    _check_deltas(lora, where, "text_encoder", text_encoder, lora.text_encoder)
    dim = text_encoder.get_input_embeddings().embedding_dim if text_encoder is not None else None
    rows = (1, len(cross_attention_layers(unet))) if unet is not None else None
    for token, emb in lora.token_embeddings.items():
        field = f"{where}: token embedding '{token}'"
        if dim is not None and (emb.ndim != 2 or emb.shape[-1] != dim):
            raise LoraError(
                lora.source, field, f"shape [layers, {dim}] (the text encoder's hidden size)", list(emb.shape)
            )
        if rows is not None and emb.shape[0] not in rows:
            raise LoraError(
                lora.source,
                field,
                f"{rows[0]} or {rows[1]} rows (one per cross-attention layer)",
                list(emb.shape),
            )
