"""A CLIP tokenizer built offline from the BPE table that open_clip ships, and small CLIP text configs.

The vocabulary is built exactly as CLIP's SimpleTokenizer builds it, so the ids match the real
SD1.5 tokenizer (49408 tokens).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources
from typing import Any

from transformers import CLIPTextConfig, CLIPTokenizer

CLIP_VOCAB_SIZE = 49408


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


@lru_cache(maxsize=2)
def _vocab_and_merges(n_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    merges: list[tuple[str, str]] = []
    if n_merges:
        bpe = resources.files("open_clip").joinpath("bpe_simple_vocab_16e6.txt.gz")
        lines = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : n_merges + 1]]  # type: ignore[misc]
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_clip_tokenizer(n_merges: int = CLIP_VOCAB_SIZE - 256 * 2 - 2) -> CLIPTokenizer:
    """Build the CLIP BPE tokenizer (``n_merges=48894`` gives the real 49408-token vocabulary)."""
    vocab, merges = _vocab_and_merges(n_merges)
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


def small_clip_text_config(tokenizer: Any, hidden: int, intermediate: int, layers: int) -> CLIPTextConfig:
    """A small SD1.x-style ``CLIPTextConfig`` (4 heads, 77 positions, quick_gelu) over ``tokenizer``'s vocabulary."""
    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=hidden,
        hidden_act="quick_gelu",
    )
