"""Parse and validate inference requests (KServe V1 and V2 / Open Inference Protocol).

Everything a client can get wrong is checked here and reported as `InvalidRequest` naming the
field, which the predictor turns into HTTP 400: malformed structure, missing or non-string fields,
mismatched V2 shapes or datatypes, invalid UTF-8, empty texts, and sizes over the configured limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from distilqa.decode import DecodeConfig
from distilqa.squad import Example

V2_INPUTS = ("question", "context")


class InvalidRequest(ValueError):
    """The client's request is wrong; the message says where."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_instances: int = 64
    max_question_chars: int = 2_000
    max_context_chars: int = 100_000
    max_top_k: int = 20
    max_answer_length: int = 512


@dataclass(frozen=True, slots=True)
class Options:
    """Per-request decoding settings."""

    decode: DecodeConfig
    top_k: int = 1


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    examples: list[Example]
    options: Options
    request_id: str | None = None


def parse_options(parameters: Any, defaults: DecodeConfig, limits: Limits, where: str = "parameters") -> Options:
    if parameters is None:
        return Options(defaults)
    if not isinstance(parameters, dict):
        raise InvalidRequest(f"'{where}' must be an object, got {_kind(parameters)}")
    known = {"top_k", "null_score_diff_threshold", "max_answer_length"}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise InvalidRequest(f"unknown {where}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    top_k = parameters.get("top_k", 1)
    if not _is_int(top_k) or not 1 <= top_k <= limits.max_top_k:
        raise InvalidRequest(f"{where}.top_k must be an integer from 1 to {limits.max_top_k}, got {top_k!r}")
    decode = defaults
    if "null_score_diff_threshold" in parameters:
        value = parameters["null_score_diff_threshold"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidRequest(f"{where}.null_score_diff_threshold must be a finite number, got {value!r}")
        decode = replace(decode, null_score_diff_threshold=float(value))
    if "max_answer_length" in parameters:
        value = parameters["max_answer_length"]
        if not _is_int(value) or not 1 <= value <= limits.max_answer_length:
            raise InvalidRequest(
                f"{where}.max_answer_length must be an integer from 1 to {limits.max_answer_length}, got {value!r}"
            )
        decode = replace(decode, max_answer_length=value)
    return Options(decode, top_k)


def parse_v1(payload: Any, defaults: DecodeConfig, limits: Limits) -> ParsedRequest:
    """`{"instances": [{"question": ..., "context": ...}, ...], "parameters": {...}}`."""
    if not isinstance(payload, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {_kind(payload)}")
    instances = payload.get("instances")
    if not isinstance(instances, list):
        raise InvalidRequest(f"'instances' must be a list of {{question, context}} objects, got {_kind(instances)}")
    _check_count(len(instances), limits)
    examples = []
    for n, item in enumerate(instances):
        if not isinstance(item, dict):
            raise InvalidRequest(f"instances[{n}] must be an object with 'question' and 'context', got {_kind(item)}")
        question = _text(item.get("question"), f"instances[{n}].question", limits.max_question_chars)
        context = _text(item.get("context"), f"instances[{n}].context", limits.max_context_chars)
        examples.append(Example(str(item.get("id", n)), question, context))
    return ParsedRequest(examples, parse_options(payload.get("parameters"), defaults, limits))


def parse_v2(request: Any, defaults: DecodeConfig, limits: Limits) -> ParsedRequest:
    """An InferRequest with BYTES tensors `question` and `context` of the same 1-D shape."""
    by_name: dict[str, Any] = {}
    for tensor in request.inputs:
        if tensor.name in by_name:
            raise InvalidRequest(f"input '{tensor.name}' is given twice")
        by_name[tensor.name] = tensor
    missing = [name for name in V2_INPUTS if name not in by_name]
    extra = sorted(set(by_name) - set(V2_INPUTS))
    if missing or extra:
        raise InvalidRequest(
            f"inputs must be exactly 'question' and 'context' (BYTES); missing: {missing or 'none'}, unexpected: {extra or 'none'}"
        )
    columns = {}
    for name in V2_INPUTS:
        tensor = by_name[name]
        if tensor.datatype != "BYTES":
            raise InvalidRequest(f"input '{name}' must have datatype BYTES, got {tensor.datatype}")
        shape = list(tensor.shape)
        data = tensor.data
        if len(shape) != 1 or not isinstance(data, list) or len(data) != shape[0]:
            raise InvalidRequest(
                f"input '{name}' must be 1-D with as many elements as its shape says (shape {shape}, "
                f"{len(data) if isinstance(data, list) else _kind(data)} elements)"
            )
        limit = limits.max_question_chars if name == "question" else limits.max_context_chars
        columns[name] = [_text(_utf8(x, f"{name}[{i}]"), f"{name}[{i}]", limit) for i, x in enumerate(data)]
    if len(columns["question"]) != len(columns["context"]):
        raise InvalidRequest(
            f"'question' and 'context' must have the same length ({len(columns['question'])} != {len(columns['context'])})"
        )
    _check_count(len(columns["question"]), limits)
    examples = [
        Example(str(i), q, c) for i, (q, c) in enumerate(zip(columns["question"], columns["context"], strict=True))
    ]
    return ParsedRequest(examples, parse_options(request.parameters, defaults, limits), request.id)


def _check_count(n: int, limits: Limits) -> None:
    if n == 0:
        raise InvalidRequest("the request holds no question")
    if n > limits.max_instances:
        raise InvalidRequest(f"too many questions in one request: {n} > {limits.max_instances}")


def _utf8(value: Any, where: str) -> Any:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{where} is not valid UTF-8 (byte {exc.start})") from None
    return value


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{where} must be a string, got {_kind(value)}")
    if not value.strip():
        raise InvalidRequest(f"{where} is empty")
    if len(value) > limit:
        raise InvalidRequest(f"{where} is too long: {len(value)} characters > {limit}")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise InvalidRequest(f"{where} is not valid UTF-8 (lone surrogate)")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
