"""LoRA-Composer's settings: every knob of the sampler with the official defaults (imports no model library)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


DEVIATIONS: tuple[str, ...] = (
    "fix: concept-token positions come from the tokenizer, not whitespace word indices",
    "fix: token positions, maps and boxes are kept per region (upstream indexes tokens in LoRA-folder order)",
    "LoRA deltas (to_k, to_v, to_out.0) are applied in low-rank form as the official optimized_version "
    "branch does (main merges full copies); fp16 results differ slightly",
    "initial noise is drawn on the CPU with torch.Generator (official: fp16 CUDA generator), so official "
    "seeds do not reproduce the official images",
    "guidance losses are computed in float32 from the model-dtype attention maps (official: fp16)",
    "top-k size is at least 1 for a non-empty box (official floor(0.2*|box|)=0 gives NaN)",
    "a self-attention query blocked from every key attends everywhere (the official fp32 constant shift; "
    "fp16 gives NaN)",
    "refinement forwards stop after the last loss-level layer (exact: later layers cannot change the loss)",
    "init_noise_sigma is applied once (official applies it twice; identical for DPM-Solver)",
    "latent re-initialization follows the code (no gradient step first); reinit_update=true gives the "
    "paper's one-step update before re-initialization",
    "T2I-Adapter through diffusers' T2IAdapter and down_intrablock_additional_residuals (diffusers-format "
    "adapter folders), applied only while refining as upstream",
    "the concept region mask is applied by attending each query group (background, each box alone, box "
    "overlaps) to its allowed keys with fused attention, and region attention is batched across regions: "
    "the same probabilities as upstream's dense -1e6 bias and per-region loop (masked keys get exactly 0), "
    "sums in another float order",
    "adaptive_loss_level=true (off by default) moves the loss, its maps and the re-initialization window "
    "search to the coarsest finer attention level (image/16, then image/8) at which every box keeps at least "
    "one cell; upstream always uses image/32, where a box narrower than one cell gets no loss and no "
    "re-initialization (the record lists such boxes under empty_boxes either way)",
)


@dataclass(frozen=True)
class LossWeights:
    """The official loss factors and switches (defaults as upstream)."""

    enhancement: float = 8.0
    fill: float = 2.0
    region: float = 10.0
    top_k_ratio: float = 0.2
    gaussian_weight: bool = True
    use_enhancement: bool = True
    use_fill: bool = True
    use_region: bool = True


@dataclass(frozen=True)
class ComposerConfig:
    """Every knob of the sampler; defaults are the official ones."""

    num_steps: int = 50
    guidance_scale: float = 7.5
    concept_enhancement: bool = True  # CE: Gaussian top-k enhancement + fill losses
    concept_isolation: bool = True  # CI: self-attention region mask + region perceptual loss
    latent_reinit: bool = True  # LR
    loss_level: int = 4  # latent / 4 = image / 32, as upstream
    enhancement_weight: float = 8.0
    fill_weight: float = 2.0
    region_weight: float = 10.0
    top_k_ratio: float = 0.2
    gaussian_weight: bool = True
    fill_loss: bool = True
    region_loss: bool = True
    self_attn_mask: bool = True
    step_size: float = 20.0
    step_size_end_ratio: float = 0.5  # lr_i = step_size * sqrt(linspace(1, ratio, num_steps)[i])
    max_refine_steps: int = 26
    early_stop_from: int = 5
    reinit_update: bool = False  # the paper's one gradient step before re-init (the code has none)
    truncate_refinement: bool = True  # stop refinement forwards after the last loss-level layer (exact)
    adaptive_loss_level: bool = False  # finer loss level when a box is empty on the loss grid (not upstream)

    def loss_weights(self) -> LossWeights:
        """The loss switches implied by CE / CI and the finer switches."""
        return LossWeights(
            enhancement=self.enhancement_weight,
            fill=self.fill_weight,
            region=self.region_weight,
            top_k_ratio=self.top_k_ratio,
            gaussian_weight=self.gaussian_weight,
            use_enhancement=self.concept_enhancement,
            use_fill=self.concept_enhancement and self.fill_loss,
            use_region=self.concept_isolation and self.region_loss,
        )

    def step_sizes(self) -> torch.Tensor:
        """The official step-size schedule ``step_size * sqrt(linspace(1, end_ratio, num_steps))``."""
        import torch

        return self.step_size * torch.linspace(1.0, self.step_size_end_ratio, self.num_steps).sqrt()
