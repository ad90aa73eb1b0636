"""Diffusers configs shipped with the bench, to load single-file (original LDM layout) checkpoints offline.

``sd15/`` holds the Stable Diffusion 1.5 pipeline configs (model_index.json and the unet, vae, text_encoder,
scheduler and tokenizer configs). The tokenizer's vocabulary is not shipped: ``sd15_config_dir`` writes it
from open_clip's BPE table (``bench.tokenizer``) into a cache copy of the folder, which is what
``from_single_file(config=...)`` is given.
"""

from __future__ import annotations

import json
import os
import uuid
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from bench.cache import default_cache_dir, entry_lock
from bench.tokenizer import build_clip_tokenizer

SD15 = "sd15"
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def shipped_configs(name: str = SD15) -> Traversable:
    """The shipped config folder ``name`` inside the installed package (may be a zip entry)."""
    return resources.files(__name__).joinpath(name)


def sd15_config_dir(cache_dir: Path | None = None) -> Path:
    """A complete SD1.5 diffusers config folder (configs + tokenizer, no weights) in the cache.

    Written to ``<cache>/configs/sd15`` (``cache_dir`` defaults to ``default_cache_dir()``): the shipped
    JSON files are copied when missing or changed, and the tokenizer's vocab.json and merges.txt are
    built once from ``build_clip_tokenizer()``.
    """
    target = (cache_dir or default_cache_dir()) / "configs" / SD15
    with entry_lock(target):
        _copy_json_tree(shipped_configs(SD15), target)
        tokenizer_dir = target / "tokenizer"
        if not all((tokenizer_dir / name).is_file() for name in TOKENIZER_FILES):
            _write_tokenizer_vocab(tokenizer_dir)
    return target


def _copy_json_tree(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy_json_tree(entry, target / entry.name)
        elif entry.name.endswith(".json"):
            data = entry.read_bytes()
            dest = target / entry.name
            if not dest.is_file() or dest.read_bytes() != data:
                _write_atomic(dest, data)


def _write_tokenizer_vocab(folder: Path) -> None:
    """Write vocab.json and merges.txt (the CLIP BPE of the real SD1.5 tokenizer) into ``folder``."""
    tokenizer = build_clip_tokenizer()
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{first} {second}\n" for first, second in merges)
    _write_atomic(folder / "merges.txt", ("#version: 0.2\n" + lines).encode("utf-8"))
    vocab = dict(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))
    text = json.dumps(vocab, ensure_ascii=False)
    _write_atomic(folder / "vocab.json", text.encode("utf-8"))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

