"""Turn (question, context) pairs into fixed-size model inputs ("features") and back.

Long contexts are cut into overlapping windows. Two conventions for `doc_stride` are in use and
both are supported, because the seed recipe (Haystack) and transformers disagree:
  - "step":    doc_stride is the distance between window starts (Haystack, the seed recipe);
  - "overlap": doc_stride is the number of tokens shared by consecutive windows (transformers'
               tokenizer `stride`, the HF run_qa.py examples).

The special-token layout ([CLS] q [SEP] c [SEP], <s> q </s></s> c </s>, ...) is read off the
tokenizer once, so any fast tokenizer works. Each distinct context is tokenized once however many
questions share it, which is most of the tokenization cost on SQuAD.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from distilqa.errors import ConfigError, ModelError

StrideMode = Literal["step", "overlap"]


@dataclass(frozen=True, slots=True)
class WindowConfig:
    max_seq_len: int = 384
    doc_stride: int = 128
    stride_mode: StrideMode = "step"
    max_query_length: int = 64

    def __post_init__(self) -> None:
        if self.stride_mode not in ("step", "overlap"):
            raise ConfigError(f"stride_mode must be 'step' or 'overlap', got {self.stride_mode!r}")
        for name in ("max_seq_len", "doc_stride", "max_query_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_query_length >= self.max_seq_len:
            raise ConfigError(
                f"max_query_length ({self.max_query_length}) must be smaller than max_seq_len ({self.max_seq_len})"
            )
        if self.doc_stride >= self.max_seq_len:
            raise ConfigError(f"doc_stride ({self.doc_stride}) must be smaller than max_seq_len ({self.max_seq_len})")


@dataclass(frozen=True, slots=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a (question, context) pair."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    question_type: int
    middle_types: tuple[int, ...]
    context_type: int
    suffix_types: tuple[int, ...]
    cls_index: int
    pad_id: int
    uses_token_types: bool

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PairTemplate:
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(
                f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer: distilqa needs character "
                "offsets, which only fast tokenizers provide"
            )
        enc = tokenizer("q", "c", return_token_type_ids=True)
        ids = list(enc["input_ids"])
        types = list(enc.get("token_type_ids") or [0] * len(ids))
        seq = enc.sequence_ids(0)
        q_pos = [i for i, s in enumerate(seq) if s == 0]
        c_pos = [i for i, s in enumerate(seq) if s == 1]
        if not q_pos or not c_pos:
            raise ModelError(f"{type(tokenizer).__name__} does not encode text pairs")
        q0, q1, c0, c1 = q_pos[0], q_pos[-1], c_pos[0], c_pos[-1]
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            raise ModelError(f"{type(tokenizer).__name__} has no padding token")
        cls_id = getattr(tokenizer, "cls_token_id", None)
        prefix = tuple(ids[:q0])
        cls_index = prefix.index(cls_id) if cls_id is not None and cls_id in prefix else 0
        return cls(
            prefix=prefix,
            middle=tuple(ids[q1 + 1 : c0]),
            suffix=tuple(ids[c1 + 1 :]),
            prefix_types=tuple(types[:q0]),
            question_type=types[q0],
            middle_types=tuple(types[q1 + 1 : c0]),
            context_type=types[c0],
            suffix_types=tuple(types[c1 + 1 :]),
            cls_index=cls_index,
            pad_id=pad_id,
            uses_token_types="token_type_ids" in tokenizer.model_input_names,
        )


@dataclass(slots=True)
class Feature:
    """One window of one question: model inputs, the context's place in them, and labels."""

    example_index: int
    input_ids: list[int]
    token_type_ids: list[int] | None
    context_start: int  # position of the window's first context token in input_ids
    offsets: list[tuple[int, int]]  # character span in the context of each context token of the window
    start_position: int  # label: token position of the answer start, or the CLS position
    end_position: int

    @property
    def context_end(self) -> int:
        """Position of the window's last context token (inclusive)."""
        return self.context_start + len(self.offsets) - 1

    def char_span(self, start: int, end: int) -> tuple[int, int]:
        """Character span [begin, end) in the context of the token span [start, end]."""
        return self.offsets[start - self.context_start][0], self.offsets[end - self.context_start][1]


def window_starts(num_tokens: int, window_len: int, config: WindowConfig) -> list[int]:
    """Start offsets (in context tokens) of the windows that cover a context of `num_tokens`."""
    if config.stride_mode == "step":
        step = min(config.doc_stride, window_len)  # never skip tokens when a long question shrinks the window
    else:
        step = max(1, window_len - config.doc_stride)
    starts = [0]
    while starts[-1] + window_len < num_tokens:
        starts.append(starts[-1] + step)
    return starts


def token_span(offsets: Sequence[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int] | None:
    """Context tokens [first, last] covering the characters [char_start, char_end); None if none do."""
    if not offsets or char_end <= char_start:
        return None
    begins = [o[0] for o in offsets]
    first = bisect.bisect_right(begins, char_start) - 1
    ends = [o[1] for o in offsets]
    last = bisect.bisect_left(ends, char_end)
    if first < 0 or last >= len(offsets) or last < first:
        return None
    return first, last


class Windower:
    """Builds features for a tokenizer and a window configuration."""

    def __init__(self, tokenizer: Any, config: WindowConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.template = PairTemplate.from_tokenizer(tokenizer)
        if config.max_query_length + self.template.num_special >= config.max_seq_len:
            raise ConfigError(
                f"max_seq_len ({config.max_seq_len}) leaves no room for context after a "
                f"{config.max_query_length}-token question and {self.template.num_special} special tokens"
            )

    def features(
        self,
        questions: Sequence[str],
        contexts: Sequence[str],
        answers: Sequence[tuple[int, int] | None] | None = None,
    ) -> list[Feature]:
        """Features for each (question, context), in order; `answers` are character spans for labels."""
        if len(questions) != len(contexts):
            raise ValueError("questions and contexts differ in length")
        tok = self.tokenizer
        question_ids = tok([q.lstrip() for q in questions], add_special_tokens=False)["input_ids"]
        distinct = list(dict.fromkeys(contexts))
        encoded = tok(distinct, add_special_tokens=False, return_offsets_mapping=True)
        by_context = {
            c: (ids, [tuple(o) for o in offs])
            for c, ids, offs in zip(distinct, encoded["input_ids"], encoded["offset_mapping"], strict=True)
        }
        out: list[Feature] = []
        for i, context in enumerate(contexts):
            ctx_ids, ctx_offsets = by_context[context]
            answer = answers[i] if answers is not None else None
            out.extend(self._windows(i, question_ids[i][: self.config.max_query_length], ctx_ids, ctx_offsets, answer))
        return out

    def _windows(
        self,
        example_index: int,
        q_ids: list[int],
        ctx_ids: list[int],
        ctx_offsets: list[tuple[int, int]],
        answer: tuple[int, int] | None,
    ) -> list[Feature]:
        t = self.template
        window_len = self.config.max_seq_len - len(q_ids) - t.num_special
        head = list(t.prefix) + q_ids + list(t.middle)
        head_types = list(t.prefix_types) + [t.question_type] * len(q_ids) + list(t.middle_types)
        context_start = len(head)
        answer_tokens = token_span(ctx_offsets, *answer) if answer is not None else None
        features = []
        for start in window_starts(len(ctx_ids), window_len, self.config):
            end = min(start + window_len, len(ctx_ids))
            ids = head + ctx_ids[start:end] + list(t.suffix)
            types = None
            if t.uses_token_types:
                types = head_types + [t.context_type] * (end - start) + list(t.suffix_types)
            s_pos = e_pos = t.cls_index
            if answer_tokens is not None and start <= answer_tokens[0] and answer_tokens[1] < end:
                s_pos = context_start + answer_tokens[0] - start
                e_pos = context_start + answer_tokens[1] - start
            features.append(Feature(example_index, ids, types, context_start, ctx_offsets[start:end], s_pos, e_pos))
        return features
