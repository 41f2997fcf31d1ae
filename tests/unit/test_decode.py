"""Answer extraction against a brute-force reference, across several windows of one question."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distilqa.decode import DecodeConfig, decode_question
from distilqa.errors import ConfigError
from distilqa.windows import Feature

CONTEXT = " ".join(f"w{i}" for i in range(60))  # tokens are the words: w0 w1 ... w59


def _features(rng, starts, window_len, context_start=4):
    words = CONTEXT.split()
    offsets, pos = [], 0
    for w in words:
        offsets.append((pos, pos + len(w)))
        pos += len(w) + 1
    feats, logits = [], []
    for s in starts:
        offs = offsets[s : s + window_len]
        n = context_start + len(offs) + 1
        feats.append(Feature(0, [0] * n, None, context_start, offs, 0, 0))
        logits.append((rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)))
    return feats, logits


def _brute_force(feats, logits, config):
    best, null = None, math.inf
    for f, (s, e) in zip(feats, logits, strict=True):
        null = min(null, float(s[0]) + float(e[0]))
        top_s = set(np.argsort(s)[::-1][: config.n_best].tolist())
        top_e = set(np.argsort(e)[::-1][: config.n_best].tolist())
        for i in range(f.context_start, f.context_end + 1):
            for j in range(i, min(f.context_end, i + config.max_answer_length - 1) + 1):
                if i in top_s and j in top_e:
                    score = float(s[i]) + float(e[j])
                    if best is None or score > best[0]:
                        best = (score, *f.char_span(i, j))
    if best is None or null - best[0] > config.null_score_diff_threshold:
        return "", null, best
    return CONTEXT[best[1] : best[2]], null, best


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("threshold", [-1.0, 0.0, 1.5])
def test_matches_brute_force(seed, threshold):
    rng = np.random.default_rng(seed)
    feats, logits = _features(rng, starts=[0, 15, 30, 45], window_len=20)
    config = DecodeConfig(
        n_best=int(rng.integers(3, 21)), max_answer_length=int(rng.integers(1, 8)), null_score_diff_threshold=threshold
    )
    answer = decode_question(CONTEXT, feats, logits, config)
    text, null, best = _brute_force(feats, logits, config)
    assert answer.text == text
    assert answer.null_score == pytest.approx(null)
    assert answer.best_span is not None and answer.best_span.score == pytest.approx(best[0])
    assert answer.na_prob == pytest.approx(1 / (1 + math.exp(-(null - best[0]))))
    if text:
        assert CONTEXT[answer.start : answer.end] == text
    assert 0.0 <= answer.score <= 1.0


def test_top_k_candidates_are_distinct_and_ranked():
    rng = np.random.default_rng(7)
    feats, logits = _features(rng, starts=[0, 10], window_len=20)  # windows overlap on w10..w19
    answer = decode_question(CONTEXT, feats, logits, DecodeConfig(), top_k=10)
    spans = [(c.start, c.end) for c in answer.candidates]
    assert len(spans) == len(set(spans)) == 10
    scores = [c.score for c in answer.candidates]
    assert scores == sorted(scores, reverse=True)


def test_no_valid_span_means_no_answer():
    feats = [Feature(0, [0, 1, 2], None, 2, [], 0, 0)]  # a window with no context tokens
    answer = decode_question("", feats, [(np.zeros(3), np.zeros(3))], DecodeConfig())
    assert answer.text == "" and answer.best_span is None and answer.na_prob == 1.0


@pytest.mark.parametrize(
    "kwargs", [{"n_best": 0}, {"max_answer_length": -3}, {"null_score_diff_threshold": float("nan")}]
)
def test_config_validation(kwargs):
    with pytest.raises(ConfigError):
        DecodeConfig(**kwargs)
