"""From start/end logits to answers: the one decoding that predict, evaluation and serving share.

Standard SQuAD 2.0 decoding (as in transformers' examples/pytorch/question-answering): per window,
candidate spans pair the n_best highest start and end logits inside the context with
start <= end and at most max_answer_length tokens, scored start + end logit. The null score of a
window is start + end logit at CLS; a question takes its best span over all its windows and the
minimum null score over them, and answers "" when null - best > threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distilqa.errors import ConfigError
from distilqa.windows import Feature


@dataclass(frozen=True, slots=True)
class DecodeConfig:
    n_best: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_best", "max_answer_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.null_score_diff_threshold, int | float) or not math.isfinite(
            self.null_score_diff_threshold
        ):
            raise ConfigError(
                f"null_score_diff_threshold must be a finite number, got {self.null_score_diff_threshold!r}"
            )


@dataclass(frozen=True, slots=True)
class Span:
    text: str
    start: int  # character offsets in the context, end exclusive
    end: int
    score: float  # start logit + end logit


@dataclass(frozen=True, slots=True)
class Answer:
    """The decision for one question, with what a threshold search or a client needs."""

    text: str  # "" = no answer
    start: int  # character offsets of `text` in the context; -1 when there is no answer
    end: int
    score: float  # probability of the returned answer among the n-best spans and the null answer
    best_span: Span | None  # the best span, even when the null answer won
    null_score: float
    na_prob: float  # sigmoid(null_score - best span score): monotone in the decision variable
    candidates: tuple[Span, ...]  # n-best spans, best first

    @property
    def is_impossible(self) -> bool:
        return self.text == ""


def window_candidates(
    feature: Feature, start_logits: np.ndarray, end_logits: np.ndarray, config: DecodeConfig
) -> list[tuple[float, int, int]]:
    """(score, start token, end token) of the valid spans among the top n_best starts and ends."""
    lo, hi = feature.context_start, feature.context_end
    if hi < lo:
        return []
    top_starts = np.argsort(start_logits)[-1 : -config.n_best - 1 : -1]
    top_ends = np.argsort(end_logits)[-1 : -config.n_best - 1 : -1]
    out = []
    for s in top_starts.tolist():
        if s < lo or s > hi:
            continue
        for e in top_ends.tolist():
            if e < s or e > hi or e - s + 1 > config.max_answer_length:
                continue
            out.append((float(start_logits[s]) + float(end_logits[e]), s, e))
    return out


def decode_question(
    context: str,
    features: Sequence[Feature],
    logits: Sequence[tuple[np.ndarray, np.ndarray]],
    config: DecodeConfig,
    cls_index: int = 0,
    top_k: int = 1,
) -> Answer:
    """Combine the windows of one question into its answer."""
    spans: list[Span] = []
    null_score = math.inf
    for feature, (start_logits, end_logits) in zip(features, logits, strict=True):
        null_score = min(null_score, float(start_logits[cls_index]) + float(end_logits[cls_index]))
        for score, s, e in window_candidates(feature, start_logits, end_logits, config):
            begin, end = feature.char_span(s, e)
            spans.append(Span(context[begin:end], begin, end, score))
    # the same span can come from overlapping windows: keep its best score only
    best_by_offsets: dict[tuple[int, int], Span] = {}
    for span in sorted(spans, key=lambda sp: sp.score, reverse=True):
        best_by_offsets.setdefault((span.start, span.end), span)
    ranked = list(best_by_offsets.values())
    best = ranked[0] if ranked else None
    scores = [null_score] + [sp.score for sp in ranked[: config.n_best]]
    peak = max(scores)
    weights = [math.exp(s - peak) for s in scores]
    total = sum(weights)
    if best is None:
        return Answer("", -1, -1, 1.0, None, null_score, 1.0, ())
    na_prob = _sigmoid(null_score - best.score)
    if null_score - best.score > config.null_score_diff_threshold:
        return Answer("", -1, -1, weights[0] / total, best, null_score, na_prob, tuple(ranked[:top_k]))
    return Answer(best.text, best.start, best.end, weights[1] / total, best, null_score, na_prob, tuple(ranked[:top_k]))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
