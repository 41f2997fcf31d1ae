"""Distillation losses, written from RECIPE.md (TinyBERT paper + Haystack's formula for S2b).

Prediction layer (S2b), the formula the card's w = 0.75 and T = 1.5 assume:
    loss = mean_b[ w·T²·(KL_start + KL_end) + (1 − w)·(CE_start + CE_end) / 2 ]
KL is over the sequence of softmax(z / T), start and end separately and summed (not averaged);
the hard CE uses the unscaled student logits and the first gold answer (no answer = CLS = 0).
Everything is computed in fp32 whatever the autocast dtype.

Intermediate (S1, S2a): Σ_m MSE(A_s[m], A_t[g(m)]) + Σ_{m=0..M} MSE(H_s[m]·W_m, H_t[g(m)]) with the
uniform map g(m) = m·L_t/L_s (m = 0 is the embedding output). Attention targets are pre-softmax
scores (the paper) or probabilities (Haystack); padded positions are excluded (an option for hidden
states). W_m is a learnable projection when the widths differ — registered as a parameter of
`IntermediateDistiller`, so it reaches the optimizer (Haystack's did not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilqa.errors import ConfigError

_NEG = -1e30  # masked logits: exp() underflows to exactly 0 in fp32


def prediction_layer_loss(
    *,
    student_start_logits: Tensor,
    student_end_logits: Tensor,
    teacher_start_logits: Tensor,
    teacher_end_logits: Tensor,
    start_positions: Tensor,
    end_positions: Tensor,
    temperature: float,
    weight: float,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Scalar loss of a batch; logits are [batch, seq], positions [batch].

    `attention_mask` ([batch, seq], 1 = real token), when given, removes padding from both the
    student's and the teacher's distributions.
    """
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"distillation weight must be within [0, 1], got {weight}")
    for name, t in (("teacher_start_logits", teacher_start_logits), ("teacher_end_logits", teacher_end_logits)):
        if t.shape != student_start_logits.shape:
            raise ConfigError(
                f"{name} has shape {tuple(t.shape)} but the student's logits have {tuple(student_start_logits.shape)}: "
                "teacher logits must be computed on the student's token ids"
            )
    pairs = (
        (student_start_logits, teacher_start_logits, start_positions),
        (student_end_logits, teacher_end_logits, end_positions),
    )
    kl = ce = 0.0
    for student, teacher, gold in pairs:
        student, teacher = student.float(), teacher.float()
        if attention_mask is not None:
            pad = attention_mask == 0
            student = student.masked_fill(pad, _NEG)
            teacher = teacher.masked_fill(pad, _NEG)
        log_p_student = F.log_softmax(student / temperature, dim=-1)
        p_teacher = F.softmax(teacher / temperature, dim=-1)
        # KL(teacher || student) summed over the sequence, per example
        kl = kl + (p_teacher * (torch.log(p_teacher.clamp_min(1e-30)) - log_p_student)).sum(dim=-1)
        ce = ce + F.cross_entropy(student, gold, reduction="none")
    per_example = weight * temperature**2 * kl + (1.0 - weight) * ce / 2.0
    return per_example.mean()


@dataclass(frozen=True)
class LayerMap:
    """Uniform map from student layers to teacher layers; index 0 is the embedding output."""

    student_layers: int
    teacher_layers: int

    def __post_init__(self) -> None:
        if self.student_layers < 1 or self.teacher_layers < 1:
            raise ConfigError("layer counts must be positive")
        if self.teacher_layers % self.student_layers:
            raise ConfigError(
                f"teacher layers ({self.teacher_layers}) must be a multiple of student layers "
                f"({self.student_layers}) for the uniform map g(m) = m * L_t / L_s"
            )

    @property
    def step(self) -> int:
        return self.teacher_layers // self.student_layers

    def teacher_layer(self, m: int) -> int:
        if not 0 <= m <= self.student_layers:
            raise ValueError(f"student layer {m} out of range 0..{self.student_layers}")
        return m * self.step


def _pair_mask(attention_mask: Tensor) -> Tensor:
    """[batch, 1, q, k]: True where both the query and the key are real tokens."""
    real = attention_mask.bool()
    return real[:, None, :, None] & real[:, None, None, :]


def attention_mse(student: Tensor, teacher: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """MSE between [batch, heads, q, k] attention maps, over real (query, key) pairs only."""
    if student.shape[1] != teacher.shape[1]:
        raise ConfigError(
            f"attention loss needs equal head counts (student {student.shape[1]}, teacher {teacher.shape[1]}): "
            "distil a teacher with another head count through logits only"
        )
    diff = (student.float() - teacher.float()) ** 2
    if attention_mask is None:
        return diff.mean()
    mask = _pair_mask(attention_mask).expand_as(diff)
    return diff[mask].mean()


def hidden_mse(student: Tensor, teacher: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """MSE between [batch, seq, width] hidden states (already projected), over real tokens when masked."""
    diff = (student.float() - teacher.float()) ** 2
    if attention_mask is None:
        return diff.mean()
    return diff[attention_mask.bool()].mean()


class IntermediateDistiller(nn.Module):
    """The TinyBERT intermediate loss with its projections W_m as trainable parameters."""

    def __init__(
        self,
        layer_map: LayerMap,
        student_width: int,
        teacher_width: int,
        attention: bool = True,
        mask_hidden_padding: bool = True,
    ) -> None:
        super().__init__()
        self.layer_map = layer_map
        self.attention = attention
        self.mask_hidden_padding = mask_hidden_padding
        count = layer_map.student_layers + 1
        if student_width == teacher_width:
            self.projections = nn.ModuleList([nn.Identity() for _ in range(count)])
        else:
            self.projections = nn.ModuleList([nn.Linear(student_width, teacher_width) for _ in range(count)])

    def forward(
        self,
        student_hidden: Sequence[Tensor],
        teacher_hidden: Sequence[Tensor],
        student_attentions: Sequence[Tensor] | None = None,
        teacher_attentions: Sequence[Tensor] | None = None,
        attention_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Loss terms: `hidden`, `attention` (when enabled) and `total`.

        Hidden states are the model's `hidden_states` (embeddings first: L + 1 tensors); attentions
        are per layer (L tensors), scores or probabilities as the caller chose.
        """
        lm = self.layer_map
        if len(student_hidden) != lm.student_layers + 1 or len(teacher_hidden) != lm.teacher_layers + 1:
            raise ConfigError(
                f"expected {lm.student_layers + 1} student and {lm.teacher_layers + 1} teacher hidden states "
                f"(embeddings included), got {len(student_hidden)} and {len(teacher_hidden)}"
            )
        hidden_mask = attention_mask if self.mask_hidden_padding else None
        hidden = sum(
            hidden_mse(self.projections[m](student_hidden[m].float()), teacher_hidden[lm.teacher_layer(m)], hidden_mask)
            for m in range(lm.student_layers + 1)
        )
        terms = {"hidden": hidden}
        if self.attention:
            if student_attentions is None or teacher_attentions is None:
                raise ConfigError("attention loss enabled but attentions were not given")
            # student layer m (1-based) <-> teacher layer g(m); attentions lists are 0-based
            terms["attention"] = sum(
                attention_mse(student_attentions[m - 1], teacher_attentions[lm.teacher_layer(m) - 1], attention_mask)
                for m in range(1, lm.student_layers + 1)
            )
        terms["total"] = sum(terms.values())
        return terms


def check_same_tokenizer(student_tokenizer: object, teacher_tokenizer: object) -> None:
    """Teacher and student must produce identical token ids, or the losses compare different tokens."""
    probe = ["Normandy, a region in France.", "Zürich's 1st café — naïve résumé? ✓"]
    s = student_tokenizer(probe)["input_ids"]  # type: ignore[operator]
    t = teacher_tokenizer(probe)["input_ids"]  # type: ignore[operator]
    if s != t or len(student_tokenizer) != len(teacher_tokenizer):  # type: ignore[arg-type]
        raise ConfigError(
            "teacher and student tokenizers differ (different ids for the same text or vocabulary sizes): "
            "distillation needs the same tokenizer"
        )
