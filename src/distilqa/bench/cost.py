"""GPU-hours and cost of each stage of a profile on a GPU node pool, from FLOPs and a measured MFU.

Why FLOPs and not a wall-clock extrapolation: the stages differ in what they run per window (S2a
runs a 12-layer teacher online, the logits step a 24-layer teacher once, S2b only the student), so
one measured model-FLOPs utilisation (from `distilqa bench train` on the pool's GPU) converts every
stage's FLOPs into hours. Without a GPU measurement the MFU is an assumption, and the table says so.

FLOPs per token of one forward pass are 2·N (N = non-embedding parameters) + 4·L·T·d, as in
`distilqa.bench.train_speed`; a training step costs 3× the trained model's forward, plus one forward
of every teacher run online.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# SQuAD 2.0 train (RECIPE.md "Scale"): windows at 384/128 and paragraphs; dev windows at 384/128
SQUAD_TRAIN_WINDOWS = 132_000
SQUAD_TRAIN_PARAGRAPHS = 19_035
SQUAD_DEV_WINDOWS = 12_300
WORDS_PER_PARAGRAPH = 120  # SQuAD contexts average ~120 words; every word gets one MLM query (exact variant)
MLM_TOKENS = 192  # tokens of one MLM query (a paragraph window)

POOLS = {  # GPU node pools of infra/: (GPU, GPUs per node, dense fp16/bf16 tensor TFLOPS per GPU, on-demand $/h)
    "p3.8xlarge": ("V100", 4, 125.0, 12.24),
    "p4d.24xlarge": ("A100", 8, 312.0, 21.96),
    "g6.12xlarge": ("L4", 4, 121.0, 4.60),
}


@dataclass(frozen=True)
class Encoder:
    layers: int
    hidden: int
    ffn: int

    def forward_flops_per_token(self, seq_len: int) -> float:
        d, f = self.hidden, self.ffn
        per_layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d  # attention, FFN, two LayerNorms
        return 2.0 * self.layers * per_layer + 4.0 * self.layers * seq_len * d


STUDENT = Encoder(6, 768, 3072)
BASE = Encoder(12, 768, 3072)  # roberta-base(-squad2): S1 / S2a teacher, MLM of the augmentation
LARGE = Encoder(24, 1024, 4096)  # roberta-large-squad2: S2b teacher


@dataclass(frozen=True)
class StageCost:
    stage: str
    windows: float
    pflop: float
    hours: float
    cost: float

    def row(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "windows": int(self.windows),
            "pflop": round(self.pflop, 1),
            "pool_hours": round(self.hours, 2),
            "cost_usd": round(self.cost, 2),
        }


def stage_flops(profile: Any, s1_sequences: int) -> list[tuple[str, float, float]]:
    """(stage, windows processed, FLOPs) for every stage the profile runs."""
    t = profile.window.max_seq_len
    student_step = 3 * STUDENT.forward_flops_per_token(t)
    rows: list[tuple[str, float, float]] = []
    mlm_queries = SQUAD_TRAIN_PARAGRAPHS * WORDS_PER_PARAGRAPH
    rows.append(
        ("augment (MLM candidates)", mlm_queries, mlm_queries * MLM_TOKENS * BASE.forward_flops_per_token(MLM_TOKENS))
    )
    if not profile.models.student_backbone:
        n = s1_sequences * profile.general.epochs
        rows.append(("S1 general distillation", n, n * t * (student_step + BASE.forward_flops_per_token(t))))
    augmented = SQUAD_TRAIN_WINDOWS * (profile.augment.factor + 1)
    n = augmented * profile.intermediate.epochs
    rows.append(("S2a intermediate distillation", n, n * t * (student_step + BASE.forward_flops_per_token(t))))
    rows.append(
        ("teacher logits (once)", SQUAD_TRAIN_WINDOWS, SQUAD_TRAIN_WINDOWS * t * LARGE.forward_flops_per_token(t))
    )
    n = SQUAD_TRAIN_WINDOWS * profile.prediction.epochs
    rows.append(("S2b prediction distillation", n, n * t * student_step))
    rows.append(("evaluate (dev)", SQUAD_DEV_WINDOWS, SQUAD_DEV_WINDOWS * t * STUDENT.forward_flops_per_token(t)))
    return rows


def mfu_from_bench(path: str | Path, gpu: str) -> float | None:
    """The lowest MFU-vs-datasheet that `distilqa bench train --output` measured on this GPU model."""
    report = json.loads(Path(path).read_text())
    rows = report if isinstance(report, list) else report.get("results", [])
    found = [r["mfu_vs_datasheet"] for r in rows if gpu in r.get("device", "") and "mfu_vs_datasheet" in r]
    return min(found) if found else None


def estimate(
    profile: Any, pool: str, mfu: float, s1_sequences: int, price_per_hour: float | None = None
) -> list[StageCost]:
    _, gpus, tflops, price = POOLS[pool]
    price = price if price_per_hour is None else price_per_hour
    flops_per_hour = gpus * tflops * 1e12 * mfu * 3600
    return [
        StageCost(stage, n, flops / 1e15, flops / flops_per_hour, flops / flops_per_hour * price)
        for stage, n, flops in stage_flops(profile, s1_sequences)
    ]


def table(rows: list[StageCost]) -> str:
    lines = ["| stage | windows | PFLOP | pool-hours | cost (USD) |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.stage} | {r.windows:,.0f} | {r.pflop:,.1f} | {r.hours:,.2f} | {r.cost:,.2f} |")
    lines.append(
        f"| **total** | | {sum(r.pflop for r in rows):,.1f} | {sum(r.hours for r in rows):,.2f} | "
        f"{sum(r.cost for r in rows):,.2f} |"
    )
    return "\n".join(lines)
