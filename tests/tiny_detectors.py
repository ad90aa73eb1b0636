"""Tiny random-weight OWLv2, Grounding DINO and DINOv2 folders, built from configs and saved as the real ones are.

Each ``save_*`` writes what ``save_pretrained`` writes for the model and its processor, so the bench's
judges load them exactly as they load downloaded weights. ``save_tiny_owlv2(..., logit_shift=...)`` pins
OWLv2's class logits to ``cos + shift`` (scale 1) and its boxes to the patch grid (box head zeroed), so
scores and boxes are known: each of the 4 x 4 patches gives the box of its cell, centred at
(k / 4, l / 4) of the padded square with side 1 / 4 (``compute_box_bias``), for every query.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bench.tokenizer import build_clip_tokenizer

OWL_PATCHES = 4  # 64 px input, 16 px patches
GDINO_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "photo", "of", "cat", "dog", "man", "girl",
               "boy", "castle", "person"]


def save_tiny_owlv2(folder: Path, seed: int = 0, logit_shift: float | None = None) -> Path:
    """A 2-layer OWLv2 (64 px, patch 16) and its processor (CLIP BPE tokenizer, 16 tokens) in ``folder``."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = build_clip_tokenizer(2000)
    tokenizer.model_max_length = 16
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=16 * OWL_PATCHES, patch_size=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).eval()
    if logit_shift is not None:
        with torch.no_grad():
            head = model.class_head
            head.logit_shift.weight.zero_()
            head.logit_shift.bias.fill_(logit_shift)
            head.logit_scale.weight.zero_()
            head.logit_scale.bias.zero_()  # elu(0) + 1 = 1
            model.box_head.dense2.weight.zero_()
            model.box_head.dense2.bias.zero_()
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                               tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def owl_cell_box(col: int, row: int, side: float) -> tuple[float, float, float, float]:
    """The pixel box (unclipped) that patch (col, row) of the tiny OWLv2 predicts with its box head zeroed."""
    cx, cy, half = (col + 1) / OWL_PATCHES, (row + 1) / OWL_PATCHES, 0.5 / OWL_PATCHES
    return ((cx - half) * side, (cy - half) * side, (cx + half) * side, (cy + half) * side)


def save_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """A tiny Grounding DINO (Swin backbone, 1-layer BERT, 10 queries) and its processor in ``folder``."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab_source.txt"
    vocab.write_text("\n".join(GDINO_WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab))
    vocab.unlink()
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_indices=[2, 3, 4])
    text = BertConfig(vocab_size=len(GDINO_WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text, num_queries=10, encoder_layers=1,
                                 decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, d_model=32,
                                 encoder_attention_heads=2, decoder_attention_heads=2, max_text_len=32,
                                 encoder_n_points=1, decoder_n_points=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GroundingDinoForObjectDetection(config).eval()
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_dino(folder: Path, seed: int = 0) -> Path:
    """The random-weight world's tiny DINOv2, saved as a local DINOv2 folder."""
    from randomworld.encoders import build_random_dino

    build_random_dino(seed).model.save_pretrained(folder)
    return folder
