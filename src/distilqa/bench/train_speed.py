"""Training throughput of the distillation stages, with an MFU-style estimate.

Shapes are the recipe's: S2a trains a 6-layer × 768 RoBERTa student against a 12-layer × 768
teacher run online (hidden states + pre-softmax attention scores), S2b trains the same student
against cached teacher logits, and "logits" times filling that cache (the 12 × 768 teacher's
forward over every feature, length-sorted, in the precision S2b's cache would use). Training
sequences are full 384-token windows (the worst case; real SQuAD batches are trimmed to their
longest window). Weights are random: speed does not depend on them.

Each step is the product's own code path: the stage's loss function, backward, gradient clipping
and an AdamW step, under the autocast the trainer would use. The first step is a warm-up; the
figure is the median of the rest.

MFU = model FLOPs per second / peak. Model FLOPs per token of one forward pass are
2·N (N = non-embedding parameters) + 4·L·T·d (attention scores and weighted sum); a training
step costs 3× the student's forward plus 1× the teacher's (S2a). The peak is measured on this
machine (a large matmul in the step's dtype), and, on a known GPU, also taken from its datasheet.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

DATASHEET_TFLOPS = {  # dense, tensor cores, no sparsity
    ("H100", "bf16"): 989.0,
    ("H100", "fp16"): 989.0,
    ("H200", "bf16"): 989.0,
    ("H200", "fp16"): 989.0,
    ("A100", "bf16"): 312.0,
    ("A100", "fp16"): 312.0,
    ("V100", "fp16"): 125.0,
    ("L4", "bf16"): 121.0,
}


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    vocab: int = 50265


def _model(shape: Shape, seed: int) -> Any:
    import torch
    from transformers import RobertaConfig, RobertaForQuestionAnswering

    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=514,
        type_vocab_size=1,
    )
    return RobertaForQuestionAnswering(config)


def forward_flops_per_token(model: Any, seq_len: int) -> float:
    c = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    return 2.0 * dense + 4.0 * c.num_hidden_layers * seq_len * c.hidden_size


def measured_peak_tflops(device: Any, dtype: Any, size: int = 2048, repeats: int = 5) -> float:
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4 if device.type == "cpu" else 50):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / (4 if device.type == "cpu" else 50))
    return 2.0 * size**3 / best / 1e12


def bench_stage(stage: str, batch: int, seq_len: int, steps: int, amp: str) -> dict[str, Any]:
    import torch

    from distilqa.distill.attention_scores import return_attention_scores
    from distilqa.distill.intermediate import intermediate_loss_fn
    from distilqa.distill.losses import IntermediateDistiller, LayerMap
    from distilqa.distill.prediction import prediction_loss_fn

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    student = _model(Shape(6), 1).to(device).train()
    g = torch.Generator().manual_seed(0)
    data = {
        "input_ids": torch.randint(3, 50000, (batch, seq_len), generator=g),
        "attention_mask": torch.ones(batch, seq_len, dtype=torch.long),
        "start_positions": torch.randint(0, seq_len, (batch,), generator=g),
        "end_positions": torch.randint(0, seq_len, (batch,), generator=g),
    }
    extra: Any = None
    flops = 3 * forward_flops_per_token(student, seq_len)
    if stage == "s2a":
        teacher = _model(Shape(12), 2).to(device).eval()
        for model in (student, teacher):
            return_attention_scores(model)
        extra = IntermediateDistiller(LayerMap(6, 12), 768, 768).to(device)
        loss_fn = intermediate_loss_fn(teacher, attention=True)
        flops += forward_flops_per_token(teacher, seq_len)
    else:
        data["teacher_logits"] = torch.randn(batch, seq_len, 2, generator=g)  # as read from the cache
        loss_fn = prediction_loss_fn(1.5, 0.75)
    data = {k: v.to(device) for k, v in data.items()}
    params = list(student.parameters()) + (list(extra.parameters()) if extra is not None else [])
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    times = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            terms = loss_fn(student, data, extra) if extra is not None else loss_fn(student, data)
        loss = terms["loss"]
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[1:])
    achieved = batch / step * seq_len * flops / 1e12
    return _record(stage, device, amp, batch, seq_len, steps, step, batch / step, achieved)


def _record(
    stage: str,
    device: Any,
    amp: str,
    batch: int,
    seq_len: int,
    steps: int,
    step_seconds: float,
    samples_per_s: float,
    achieved_tflops: float,
    **extra: Any,
) -> dict[str, Any]:
    """One benchmark row: the figures, this machine's measured matmul peak and, on a known GPU, its datasheet's."""
    import torch

    peak = measured_peak_tflops(device, {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[amp])
    result = {
        "stage": stage,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "amp": amp,
        "batch": batch,
        "seq_len": seq_len,
        "steps": steps,
        **extra,
        "step_seconds": round(step_seconds, 3),
        "samples_per_s": round(samples_per_s, 2),
        "model_tflops": round(achieved_tflops, 3),
        "measured_matmul_peak_tflops": round(peak, 2),
        "mfu_vs_measured_peak": round(achieved_tflops / peak, 3),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        for (gpu, kind), tflops in DATASHEET_TFLOPS.items():
            if gpu in name and kind == amp:
                result["datasheet_peak_tflops"] = tflops
                result["mfu_vs_datasheet"] = round(achieved_tflops / tflops, 3)
        result["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def bench_teacher_logits(batch: int, seq_len: int, steps: int, amp: str) -> dict[str, Any]:
    """Features/s of S2b's teacher-logit cache fill: `cached_teacher_logits` itself, on features whose
    lengths spread over [seq_len/4, seq_len] as SQuAD windows do (the last window of a paragraph is short)."""
    import tempfile

    import torch

    from distilqa.distill.distributed import current
    from distilqa.distill.teacher_logits import cached_teacher_logits

    device = current().device
    teacher = _model(Shape(12), 2)
    n = batch * steps
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(seq_len // 4, seq_len + 1, (n,), generator=g)
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()
    data = {"input_ids": torch.randint(3, 50000, (n, seq_len), generator=g) * mask, "attention_mask": mask}
    with tempfile.TemporaryDirectory() as tmp:
        # one warm-up batch on its own cache, then the timed fill on a fresh one
        warm = {k: v[:batch] for k, v in data.items()}
        cached_teacher_logits(teacher, "bench", warm, {"warm": True}, batch, tmp, device, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        cached_teacher_logits(teacher, "bench", data, {}, batch, tmp, device, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    tokens = int(lengths.sum())
    achieved = tokens * forward_flops_per_token(teacher, int(lengths.float().mean())) / seconds / 1e12
    return _record(
        "logits",
        device,
        amp,
        batch,
        seq_len,
        steps,
        seconds / steps,
        n / seconds,
        achieved,
        features=n,
        mean_length=round(tokens / n, 1),
    )
