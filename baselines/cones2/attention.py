"""Cones2's layout-guided cross-attention: a bias added to the attention scores of the conditional pass.

For a cross-attention layer with ``N`` image positions, the bias of position ``p`` and token ``j`` is

    guidance_weight * W[p, j] * log(1 + sigma^2) * std(QK^T)

where ``W`` is the layout weight map of that resolution (for a subject's tokens: ``weight_active``
inside its box and ``weight_negative`` everywhere else, other subjects' boxes and the background alike,
as upstream ``layout_guidance.py`` L215; 0 for every other token), ``sigma`` is the guidance schedule's
noise level and ``std`` is taken over the whole score tensor of the layer (upstream
``attention_control.py``). The scores with bias are then scaled by ``1/sqrt(d)`` and softmaxed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


def layout_bias(scores: torch.Tensor, weight: torch.Tensor, sigma: float, guidance_weight: float) -> torch.Tensor:
    """The attention-score bias of upstream Cones2 for scores ``[B*heads, N, T]`` and weights ``[N, T]``."""
    return guidance_weight * weight.to(scores.dtype) * math.log(1.0 + float(sigma) ** 2) * scores.std()


@dataclass
class Cones2State:
    """What the processors need in one conditional UNet call: weight maps by sequence length and sigma.

    ``record`` (optional) collects the cross-attention probabilities ``[B*heads, N, T]`` by layer
    call, for tests and visualisation.
    """

    weights: dict[int, torch.Tensor]
    sigma: float
    guidance_weight: float
    record: list[torch.Tensor] | None = field(default=None)


class Cones2AttnProcessor:
    """Explicit-score attention with Cones2's layout bias on cross-attention; self-attention is unchanged."""

    def __init__(self) -> None:
        self._plain = AttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        cones2: Cones2State | None = None,
    ) -> torch.Tensor:
        """Attention of one layer; the bias applies only to cross-attention when ``cones2`` is given."""
        if encoder_hidden_states is None or cones2 is None:
            return self._plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))

        scores = torch.bmm(query, key.transpose(-1, -2))
        weight = cones2.weights.get(scores.shape[1])
        if weight is None:
            raise ValueError(
                f"Cones2: no layout weight map for {scores.shape[1]} image positions; have {sorted(cones2.weights)}"
            )
        scores = scores + layout_bias(scores, weight, cones2.sigma, cones2.guidance_weight)
        probs = (scores * attn.scale).softmax(dim=-1).to(value.dtype)
        if cones2.record is not None:
            cones2.record.append(probs.detach())
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
