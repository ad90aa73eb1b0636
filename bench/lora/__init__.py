"""LoRA files and their application: one canonical in-memory form, converters at the edge."""

from bench.lora.apply import lora_merged, lora_switcher, low_rank_delta, merge_lora_weights
from bench.lora.canonical import ConceptLora, LoraDelta
from bench.lora.formats import LoraError, check_lora_fits, load_lora

__all__ = [
    "ConceptLora",
    "LoraDelta",
    "LoraError",
    "check_lora_fits",
    "load_lora",
    "lora_merged",
    "lora_switcher",
    "low_rank_delta",
    "merge_lora_weights",
]
