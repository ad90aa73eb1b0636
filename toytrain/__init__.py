"""Developer tools of the toy world: its training stages, reference renders and quality gates.

Above the product: the bench never imports this package. It adds the ``bench toy-train`` and
``bench toy-gates`` commands through the ``bench_commands`` hook (installed entry point
``lcbench = toytrain``), and ``python -m toytrain STAGE`` / ``python -m toytrain.gates`` run it directly.
"""

from pathlib import Path

TOY_DATASET = Path(__file__).resolve().parents[1] / "datasets" / "toy"
LORA_DIR = TOY_DATASET / "loras"
# weight of the ED-LoRA stage's loss pulling concept-token attention into the object's box (toytrain.lora)
LORA_GROUNDING_WEIGHT = 0.0
# what the grounding loss may train: "all" (token embeddings, text-encoder and UNet LoRAs) or "text" (no UNet LoRA)
GROUNDING_TRAINS = ("all", "text")
LORA_GROUNDING_TRAINS = "all"
# share of the ED-LoRA stage's views that also hold other objects, named in the caption (toytrain.lora)
LORA_DISTRACTOR_SHARE = 0.5
# which other objects those views hold (toyworld.concepts.DISTRACTOR_KINDS)
LORA_DISTRACTORS = "differ"
# which UNet projections the ED-LoRA stage trains, as peft target_modules (a list matches name suffixes, a string
# is a full-name regex): "all" every attention projection, as Mix-of-Show trains them; "cross-kvo" the
# cross-attention key, value and output projections only, what LoRA-Composer's region injection reads of a
# concept's UNet LoRA (base W_q, no attn1 delta)
UNET_TARGET_SETS: dict[str, list[str] | str] = {
    "all": ["to_q", "to_k", "to_v", "to_out.0"],
    "cross-kvo": r".*\.attn2\.(to_k|to_v|to_out\.0)",
}
LORA_UNET_TARGETS = "all"
# peak learning rate of the ED-LoRA stage's UNet LoRA (the text-encoder LoRA's stays 1e-3, the token embeddings' 5e-3)
LORA_UNET_LR = 1e-3
# the sizes of the ED-LoRA views that show the concept alone (toyworld.concepts.VIEW_SIZES)
LORA_VIEW_SIZES = "alone"
# which cross-attention layers the base stage's grounding loss reads (toytrain.base.grounding_layers): "last", the last
# 16x16 and the last 8x8 one (the committed world's), or "all", every layer of 8x8 or finer, each of which
# LoRA-Composer's guidance may average at its loss level
GROUNDING_LAYERS = ("last", "all")
BASE_GROUNDING_LAYERS = "last"
