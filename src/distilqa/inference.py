"""Run an extractive-QA model over many questions: window, batch, forward, decode.

`QAModel` is the single inference path: `distilqa predict`, the pipeline's evaluation step and the
KServe predictor all call `QAModel.answer`, so they cannot disagree. Speed comes from sorting
windows by length and padding each batch only to its own longest window (most SQuAD windows are
far shorter than max_seq_len), and from tokenizing each distinct context once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distilqa.decode import Answer, DecodeConfig, decode_question
from distilqa.errors import ConfigError
from distilqa.progress import ProgressFactory
from distilqa.squad import Example
from distilqa.windows import Feature, WindowConfig, Windower

Precision = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
# forward passes computing at once, each on its share of the cores: the server's default and predict's,
# so that both split a GEMM over the same number of threads (bf16 results depend on it)
DEFAULT_WORKERS = 2


def threads_per_worker(workers: int) -> int:
    """The cores (OMP_NUM_THREADS when set, as in the serving manifests, else this process's CPUs) split among workers."""
    budget = os.environ.get("OMP_NUM_THREADS", "")
    cores = int(budget) if budget.isdigit() and int(budget) > 0 else len(os.sched_getaffinity(0))
    return max(1, cores // workers)


def share_cores(workers: int) -> int:
    """Give torch each worker's share of the cores (its thread count is process-wide); returns it."""
    import torch

    threads = threads_per_worker(workers)
    torch.set_num_threads(threads)
    return threads


def parallel_batch(workers: int = DEFAULT_WORKERS, **options: Any) -> BatchConfig:
    """The batch config of `distilqa predict`: `workers` passes at once, torch set to each one's share.

    The server splits the cores the same way (`share_cores` at load), so the two answer alike.
    """
    batch = BatchConfig(workers=workers, **options)
    share_cores(workers)
    return batch


def cpu_flags() -> set[str]:
    """This CPU's feature flags (from /proc/cpuinfo; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run at several times the fp32 rate."""
    from distilqa.distill.precision import NATIVE_BF16_CPU_FLAGS

    return bool(cpu_flags() & NATIVE_BF16_CPU_FLAGS)


def cpu_has_amx_bf16() -> bool:
    """AMX tiles: oneDNN's bf16 GEMMs outrun fbgemm's int8 ones, which use VNNI, not AMX."""
    return "amx_bf16" in cpu_flags()


def cpu_has_int8_dot() -> bool:
    """VNNI (AVX-512 or AVX): fbgemm's int8 GEMM multiplies and accumulates in one instruction."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_has_avx2() -> bool:
    """fbgemm's int8 GEMMs need AVX2 at least; without VNNI they still beat fp32 (see resolve_precision)."""
    return "avx2" in cpu_flags()


def resolve_precision(precision: str) -> str:
    """`auto` -> bf16 on AMX CPUs, else int8 on VNNI CPUs, else bf16 where the CPU computes bf16 natively,
    else int8 on AVX2 CPUs, else fp32.

    The fastest path within its accuracy budget (tests/integration/test_precision_accuracy.py;
    docs/serving.md has the figures). On an AMX Xeon bf16 answered 2.0x as many questions per second
    as int8 (65.8 vs 33.0, 6 x 768 model, 2 cores); on an AVX-512 EPYC without AMX int8 was the faster
    one; on an AVX2-only EPYC (Zen 3) int8 answered 1.54x as many as fp32 (9.01 vs 5.84) and bf16,
    emulated there, is 7x slower than fp32. Neither reduced path's answers depend on batching, so the
    server answers exactly as `distilqa predict`.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if cpu_has_amx_bf16():
            return "bf16"
        if cpu_has_int8_dot():
            return "int8"
        if cpu_has_native_bf16():
            return "bf16"
        return "int8" if cpu_has_avx2() else "fp32"
    return precision


def apply_precision(model: Any, precision: str) -> Any:
    """Convert a loaded fp32 model: bf16 weights, or int8 Linear layers quantised per window."""
    if precision == "bf16":
        import torch

        from distilqa.quantize import windowwise

        return windowwise(model.to(torch.bfloat16))  # batch-invariant GEMMs (distilqa.quantize)
    if precision == "int8":
        from distilqa.quantize import quantize_windowwise

        return quantize_windowwise(model)
    return model


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """How windows are grouped into forward passes.

    With `sort_by_length`, windows are sorted longest first and a forward pass takes at most
    `batch_size` of them, and only windows at least (1 - `max_pad_fraction`) as long as its longest:
    a server's micro-batch of a few questions mixes 60- and 384-token windows, and padding them
    all to 384 cost about a quarter of its throughput (docs/serving.md).
    """

    batch_size: int = 32
    sort_by_length: bool = True  # False = pad every window to max_seq_len, in input order (the naive way)
    max_pad_fraction: float = 0.1
    workers: int = 1  # forward passes at once (threads); `parallel_batch` also gives torch each one's share

    def __post_init__(self) -> None:
        for name in ("batch_size", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.max_pad_fraction <= 1.0:
            raise ConfigError(f"max_pad_fraction must be within [0, 1], got {self.max_pad_fraction!r}")

    def chunks(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices of `lengths` grouped into forward passes, in the order they run."""
        if not self.sort_by_length:
            order = list(range(len(lengths)))
            return [order[b : b + self.batch_size] for b in range(0, len(order), self.batch_size)]
        order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
        out: list[list[int]] = []
        for i in order:
            chunk = out[-1] if out else None
            if chunk and len(chunk) < self.batch_size and lengths[i] >= (1 - self.max_pad_fraction) * lengths[chunk[0]]:
                chunk.append(i)
            else:
                out.append([i])
        return out


class QAModel:
    """A Hugging Face extractive-QA model with its fast tokenizer, ready to answer questions."""

    def __init__(self, model: Any, tokenizer: Any, source: str = "<memory>", precision: str = "fp32") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.source = source
        self.precision = precision

    @classmethod
    def load(cls, location: str | os.PathLike[str], precision: str = "fp32") -> QAModel:
        """Load from a local directory, an s3:// prefix, or a Hugging Face hub id (hub ids need network)."""
        location = os.fspath(location)
        resolved = resolve_precision(precision)
        from distilqa.model_io import load_pretrained

        tokenizer, model = load_pretrained(location, "AutoModelForQuestionAnswering")
        return cls(apply_precision(model, resolved), tokenizer, location, resolved)

    def windower(self, config: WindowConfig) -> Windower:
        return Windower(self.tokenizer, config)

    def logits(
        self,
        features: Sequence[Feature],
        windower: Windower,
        batch: BatchConfig,
        progress: ProgressFactory | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Start and end logits of every feature, trimmed to the feature's own length, in input order."""
        import torch

        template = windower.template
        fixed_len = None if batch.sort_by_length else windower.config.max_seq_len
        if self.precision in ("int8", "bf16") and batch.sort_by_length:
            # reduced-precision answers stay batch-invariant only without padding: pad rows would enter an
            # int8 window's activation scale and lengthen any window's attention (distilqa.quantize)
            batch = replace(batch, max_pad_fraction=0.0)
        out: list[tuple[np.ndarray, np.ndarray]] = [None] * len(features)  # type: ignore[list-item]

        def forward(chunk: list[int]) -> int:
            inputs = _pad([features[i] for i in chunk], template.pad_id, fixed_len)
            with torch.inference_mode():  # thread-local: entered in the worker that computes
                result = self.model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
            starts = result.start_logits.float().numpy()
            ends = result.end_logits.float().numpy()
            for row, i in enumerate(chunk):
                n = len(features[i].input_ids)
                out[i] = (starts[row, :n].copy(), ends[row, :n].copy())
            return len(chunk)

        from concurrent.futures import ThreadPoolExecutor

        chunks = batch.chunks([len(f.input_ids) for f in features])
        bar = progress(len(features)) if progress else None
        with ThreadPoolExecutor(batch.workers, thread_name_prefix="distilqa-forward") as pool:  # no threads until used
            for n in pool.map(forward, chunks) if batch.workers > 1 else map(forward, chunks):
                if bar is not None:
                    bar.update(n)
        if bar is not None:
            bar.close()
        return out

    def answer(
        self,
        examples: Sequence[Example],
        window: WindowConfig | None = None,
        decode: DecodeConfig | Sequence[DecodeConfig] | None = None,
        batch: BatchConfig | None = None,
        progress: ProgressFactory | None = None,
        top_k: int | Sequence[int] = 1,
    ) -> list[Answer]:
        """Answers for `examples`, in order.

        `decode` and `top_k` may be given per example: the server batches questions of requests
        that asked for different thresholds or answer counts into one forward pass.
        """
        windower = self.windower(window or WindowConfig())
        features = windower.features([e.question for e in examples], [e.context for e in examples])
        return self.answer_windows(examples, features, windower, decode, batch, progress, top_k)

    def answer_windows(
        self,
        examples: Sequence[Example],
        features: Sequence[Feature],
        windower: Windower,
        decode: DecodeConfig | Sequence[DecodeConfig] | None = None,
        batch: BatchConfig | None = None,
        progress: ProgressFactory | None = None,
        top_k: int | Sequence[int] = 1,
    ) -> list[Answer]:
        """Answers for `examples` from their windows (made by `windower`, or read from a feature table)."""
        decode = decode or DecodeConfig()
        decodes = [decode] * len(examples) if isinstance(decode, DecodeConfig) else list(decode)
        top_ks = [top_k] * len(examples) if isinstance(top_k, int) else list(top_k)
        if len(decodes) != len(examples) or len(top_ks) != len(examples):
            raise ValueError("one decode setting and one top_k per example")
        logits = self.logits(features, windower, batch or BatchConfig(), progress)
        grouped: list[list[int]] = [[] for _ in examples]
        for i, feature in enumerate(features):
            grouped[feature.example_index].append(i)
        return [
            decode_question(
                example.context,
                [features[i] for i in idx],
                [logits[i] for i in idx],
                decodes[n],
                windower.template.cls_index,
                top_ks[n],
            )
            for n, (example, idx) in enumerate(zip(examples, grouped, strict=True))
        ]

    def answer_table(
        self,
        examples: Sequence[Example],
        table: Any,
        window: WindowConfig,
        decode: DecodeConfig | None = None,
        batch: BatchConfig | None = None,
        progress: ProgressFactory | None = None,
        block: int = 16384,
    ) -> list[Answer]:
        """Answers for a whole data set whose windows are a memory-mapped feature table built with
        offsets (`distilqa.features`): evaluation's path. Questions are answered `block` at a time, so
        memory holds one block's windows; a set of at most `block` questions is one forward pass over
        the windows `answer` would make, and so gets exactly its answers."""
        windower = self.windower(window)
        answers: list[Answer] = []
        for first in range(0, len(examples), block):
            last = min(first + block, len(examples))
            features = table.windows(table.feature_rows(first, last), first)
            answers += self.answer_windows(examples[first:last], features, windower, decode, batch, progress)
        return answers


def _pad(features: Sequence[Feature], pad_id: int, fixed_len: int | None) -> dict[str, np.ndarray]:
    length = fixed_len or max(len(f.input_ids) for f in features)
    input_ids = np.full((len(features), length), pad_id, dtype=np.int64)
    attention = np.zeros((len(features), length), dtype=np.int64)
    types = np.zeros((len(features), length), dtype=np.int64) if features[0].token_type_ids is not None else None
    for row, f in enumerate(features):
        n = len(f.input_ids)
        input_ids[row, :n] = f.input_ids
        attention[row, :n] = 1
        if types is not None:
            types[row, :n] = f.token_type_ids
    inputs = {"input_ids": input_ids, "attention_mask": attention}
    if types is not None:
        inputs["token_type_ids"] = types
    return inputs
