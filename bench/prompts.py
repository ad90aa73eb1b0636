"""Layer-wise (P+ / ED-LoRA) prompt encoding and the attention processor that feeds it to the UNet.

ED-LoRA gives each concept token one input embedding per cross-attention layer. A prompt is encoded
once per layer with the concept tokens bound to that layer's embedding (Mix-of-Show's
``bind_concept_prompt``), giving ``[layers, 77, D]``; cross-attention layer ``l`` (numbered down ->
mid -> up, :mod:`bench.layers`) then attends to copy ``l``.

The shared pipeline is never changed: concept tokens are kept whole by splitting the prompt on
them and tokenizing the text between them with the pipeline's own tokenizer (what a tokenizer copy
with the tokens added does, without the copy), concept rows are written into the token-embedding
output by a temporary forward hook (the embedding matrix is not resized), and a text-encoder LoRA
is merged only for the call.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from bench.layers import layer_indices
from bench.lora.apply import lora_merged
from bench.lora.canonical import ConceptLora

_PLACEHOLDER_ID = 0  # input id fed to the model at concept-token positions; the hook overwrites its row
# Private tokenizer copies per base tokenizer and token set (``LayerwiseTextEncoder.tokenizer_for``, for
# callers that need real ids of the concept tokens, e.g. Mix-of-Show fusion, once per concept): a copy
# costs 0.15-0.4 s. Prompt encoding and token positions never copy (:func:`concept_token_ids`).
_PRIVATE_TOKENIZERS: weakref.WeakKeyDictionary[Any, OrderedDict[frozenset[str], Any]] = weakref.WeakKeyDictionary()


def concept_token_ids(tokenizer: Any, prompt: str, concept_tokens: Sequence[str]
                      ) -> tuple[list[int], dict[int, str]]:
    """The padded, truncated ``model_max_length`` (77) ids of ``prompt`` with ``concept_tokens`` kept whole.

    Equal to tokenizing with a copy of ``tokenizer`` that has the tokens added as special tokens, without
    the copy: the prompt is split on the tokens (leftmost, longest first, exact case, as the added-token
    matcher splits) and the text between them is tokenized by ``tokenizer`` itself. Concept-token
    positions hold ``_PLACEHOLDER_ID``; the returned dict maps each of them to its token.
    """
    ids: list[int] = []
    marks: dict[int, str] = {}  # index into ids (before BOS) -> token
    start = 0
    tokens = sorted(set(concept_tokens), key=len, reverse=True)
    if tokens:
        for match in re.finditer("|".join(re.escape(t) for t in tokens), prompt):
            ids += _text_ids(tokenizer, prompt[start : match.start()])
            marks[len(ids)] = match.group()
            ids.append(_PLACEHOLDER_ID)
            start = match.end()
    ids += _text_ids(tokenizer, prompt[start:])
    length = tokenizer.model_max_length
    body = ids[: length - 2]
    padded = [tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
    padded += [tokenizer.pad_token_id] * (length - len(padded))
    return padded, {i + 1: token for i, token in marks.items() if i < len(body)}


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of plain text between concept tokens (no BOS/EOS); empty text gives none."""
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


def token_positions(tokenizer: Any, prompt: str, concept_tokens: Sequence[str]) -> list[int]:
    """Position of (the first occurrence of) each concept token in the 77-long tokenized prompt (SOT = 0).

    The tokens are kept whole (as if added as special tokens, :func:`concept_token_ids`), so each is
    one position, and positions come from the real tokenization, not from whitespace word indices.
    """
    ids, marks = concept_token_ids(tokenizer, prompt, concept_tokens)
    positions = []
    for token in concept_tokens:
        found = [p for p, t in marks.items() if t == token]
        if not found:
            raise ValueError(
                f"concept token '{token}' is not in the first {len(ids)} tokens of prompt '{prompt}'"
            )
        positions.append(min(found))
    return positions


class LayerwiseTextEncoder:
    """Encodes prompts P+-style: one copy per cross-attention layer with concept tokens bound per layer.

    Only the tokens of the concepts given to a call are kept whole, as in Mix-of-Show where each
    LoRA pipeline has its own tokenizer; any other ``<...>`` text is tokenized as plain text.
    """

    _CACHED_TOKENIZERS = 8

    def __init__(self, tokenizer: Any, text_encoder: nn.Module):
        self._base_tokenizer = tokenizer
        self._tokenizers = _PRIVATE_TOKENIZERS.setdefault(tokenizer, OrderedDict())
        self.text_encoder = text_encoder

    @classmethod
    def from_pipeline(cls, pipe: Any) -> LayerwiseTextEncoder:
        """Wrap a diffusers pipeline's tokenizer (never modified) and text encoder (shared, left unchanged)."""
        return cls(pipe.tokenizer, pipe.text_encoder)

    def tokenizer_for(self, tokens: Sequence[str]) -> Any:
        """A private copy of the tokenizer that keeps exactly ``tokens`` (plus its own specials) whole (cached)."""
        key = frozenset(tokens)
        if key not in self._tokenizers:
            tokenizer = copy.deepcopy(self._base_tokenizer)
            tokenizer.add_tokens(sorted(key), special_tokens=True)
            self._tokenizers[key] = tokenizer
            if len(self._tokenizers) > self._CACHED_TOKENIZERS:
                self._tokenizers.popitem(last=False)
        self._tokenizers.move_to_end(key)
        return self._tokenizers[key]

    def token_positions(self, prompt: str, concept_tokens: Sequence[str]) -> list[int]:
        """:func:`token_positions` of ``concept_tokens`` (kept whole) in ``prompt``."""
        return token_positions(self._base_tokenizer, prompt, concept_tokens)

    @torch.no_grad()
    def encode(
        self,
        prompt: str,
        concepts: Sequence[ConceptLora] = (),
        text_lora: ConceptLora | None = None,
        num_layers: int = 16,
    ) -> torch.Tensor:
        """``[num_layers, 77, D]``: copy ``l`` has each concept token bound to its layer-``l`` embedding.

        A one-row embedding is used for every layer. ``text_lora``'s text-encoder deltas are merged for
        the call only. A prompt without concept tokens gives one encoding expanded over the layers.
        """
        table = _embedding_table(concepts, num_layers)
        ids, marks = concept_token_ids(self._base_tokenizer, prompt, list(table))
        positions = sorted(marks)
        device = next(self.text_encoder.parameters()).device
        input_ids = torch.tensor(ids, device=device)
        layerwise = any(table[marks[p]].shape[0] > 1 for p in positions)
        copies = num_layers if layerwise else 1
        rows = None
        if positions:
            per_position = [table[marks[p]].expand(num_layers, -1) for p in positions]
            rows = torch.stack(per_position, dim=1)[:copies]  # [copies, n_positions, D]
        merged: AbstractContextManager[None] = nullcontext()
        if text_lora is not None:
            te_only = dataclasses.replace(text_lora, unet={}, token_embeddings={})
            merged = lora_merged(None, self.text_encoder, [te_only], [1.0])
        with merged, token_rows_written(self.text_encoder.get_input_embeddings(), positions, rows):
            hidden = self.text_encoder(input_ids.expand(copies, -1))[0]
        return hidden.expand(num_layers, -1, -1) if copies == 1 else hidden


def _embedding_table(concepts: Sequence[ConceptLora], num_layers: int) -> dict[str, torch.Tensor]:
    """``{token: [rows, D]}`` over all concepts; rows must be 1 or ``num_layers``."""
    table: dict[str, torch.Tensor] = {}
    for concept in concepts:
        for token, emb in concept.token_embeddings.items():
            if emb.ndim != 2 or emb.shape[0] not in (1, num_layers):
                raise ValueError(
                    f"{concept.source}: token embedding '{token}': expected [1 or {num_layers}, dim], "
                    f"got {list(emb.shape)}"
                )
            if token in table and not torch.equal(table[token], emb):
                raise ValueError(f"{concept.source}: token '{token}' is also defined by another concept")
            table[token] = emb
    return table


@contextmanager
def token_rows_written(
    embedding: nn.Module, positions: Sequence[int], rows: torch.Tensor | None
) -> Iterator[None]:
    """While active, the token-embedding output at ``positions`` is replaced by ``rows`` [batch, n, D].

    Gradients flow into ``rows``, so training code (toy ED-LoRAs) uses it to learn token embeddings.
    """
    if rows is None:
        yield
        return

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, list(positions)] = rows.to(device=output.device, dtype=output.dtype)
        return output

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------
# The UNet side: layer l's cross-attention reads copy l


@dataclass
class LayerwiseState:
    """What the layer-wise processors read: ``embeddings`` ``[B, layers, 77, D]`` or None (plain)."""

    embeddings: torch.Tensor | None = None


class LayerwiseAttnProcessor:
    """Cross-attention processor that attends to its own layer's text embedding.

    When ``state.embeddings`` is set, ``encoder_hidden_states`` is replaced by
    ``state.embeddings[:, layer_index]``; otherwise it is exactly :class:`AttnProcessor2_0`.
    """

    def __init__(self, layer_index: int, state: LayerwiseState):
        self.layer_index = layer_index
        self.state = state
        self._sdpa = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeddings = self.state.embeddings
        if embeddings is not None and encoder_hidden_states is not None:
            if embeddings.ndim != 4 or embeddings.shape[0] != hidden_states.shape[0]:
                raise ValueError(
                    f"layer-wise embeddings: expected [batch={hidden_states.shape[0]}, layers, 77, D], "
                    f"got {list(embeddings.shape)}"
                )
            encoder_hidden_states = embeddings[:, self.layer_index].to(hidden_states.dtype)
        return self._sdpa(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class LayerwiseHandle:
    """Puts a UNet's original attention processors back; usable as a context manager."""

    def __init__(self, unet: nn.Module, original: Mapping[str, Any]):
        self._unet = unet
        self._original = dict(original)
        self.restored = False

    def restore(self) -> None:
        """Reinstall the processors the UNet had before :func:`install_layerwise` (idempotent)."""
        if not self.restored:
            self._unet.set_attn_processor(dict(self._original))  # set_attn_processor pops from the dict
            self.restored = True

    def __enter__(self) -> LayerwiseHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def install_layerwise(unet: nn.Module, state: LayerwiseState) -> LayerwiseHandle:
    """Put a :class:`LayerwiseAttnProcessor` with its layer index on every ``attn2``; others are kept.

    Returns a handle whose ``restore()`` (or ``with`` exit) reinstalls the original processors.
    """
    original = unet.attn_processors
    indices = layer_indices(unet)
    processors = {}
    for name, processor in original.items():
        module = name.removesuffix(".processor")
        processors[name] = LayerwiseAttnProcessor(indices[module], state) if module in indices else processor
    unet.set_attn_processor(processors)
    return LayerwiseHandle(unet, original)
