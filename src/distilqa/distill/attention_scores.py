"""Pre-softmax attention scores as the TinyBERT attention target (the paper's choice).

transformers returns attention *probabilities* with `output_attentions=True`. The paper distils
the scaled scores q·kᵀ/√d before the mask and softmax; probabilities squash them (a wrong large
score and a right very large score look alike after softmax). We register an attention function
that computes exactly what eager attention computes but hands back the raw scores as its weights,
so `outputs.attentions` holds scores while the forward output is unchanged. Masked positions are
left as they are here; the loss excludes them (`attention_mse` with the attention mask).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

SCORES = "distilqa_scores"
_registered = False


def _scores_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    weights = scores if attention_mask is None else scores + attention_mask
    weights = nn.functional.dropout(weights.softmax(dim=-1), p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, scores


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(SCORES, _scores_attention)
    AttentionMaskInterface.register(SCORES, eager_mask)  # additive float masks, as eager uses
    _registered = True


def return_attention_scores(model: Any) -> None:
    """Make `model(..., output_attentions=True).attentions` hold pre-softmax scores."""
    from distilqa.errors import ConfigError

    _register()
    model.set_attn_implementation(SCORES)
    if model.config._attn_implementation != SCORES:
        raise ConfigError(
            f"{type(model).__name__} does not take pluggable attention functions, so its pre-softmax scores "
            "cannot be captured: use the attention probabilities target instead"
        )


def return_attention_probabilities(model: Any) -> None:
    """Eager attention: the only kind that returns probabilities (sdpa/flash do not)."""
    model.set_attn_implementation("eager")
