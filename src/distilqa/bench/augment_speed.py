"""Paragraphs/second of masked-LM augmentation: the straightforward baseline against distilqa's.

Same MLM (a BERT of MiniLM-L6-H384's shape, randomly initialised: speed does not depend on the
weights), same 200 dev paragraphs, same candidate filter and fallback. Each variant runs in its
own process so its peak memory (max RSS) is its own. Variants:
  baseline  one masked copy per word, batches of 16 per paragraph, logits at every position;
  exact     distilqa's batching with one mask per copy: must give the baseline's candidates;
  fast      distilqa's default, 8 words masked per copy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = {"baseline": 1, "exact": 1, "fast": 8}


def _build_models(work: Path) -> Path:
    from distilqa.local_models import random_mlm_model, train_tokenizer
    from distilqa.squad import load_squad

    model_dir = work / "bert-mlm-6l-384d"
    if not (model_dir / "config.json").exists():
        ds = load_squad()
        contexts = list(dict.fromkeys(p.context for _, p, _ in ds.iter_questions()))
        tok_dir = train_tokenizer(contexts, work / "tokenizer-wordpiece", "wordpiece", vocab_size=30522)
        random_mlm_model(tok_dir, model_dir, num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536)
    return model_dir


def _jobs(paragraphs: int) -> list[Any]:
    from distilqa.augment.augment import protected_spans
    from distilqa.augment.sources import ParagraphJob
    from distilqa.augment.words import scan_words
    from distilqa.squad import load_squad

    located = [p for a in load_squad().articles for p in a.paragraphs][:paragraphs]
    return [ParagraphJob(p.context, scan_words(p.context, protected_spans(p)).replaceable) for p in located]


def run_variant(variant: str, model_dir: str, paragraphs: int, k: int, out: str) -> None:
    """Child process: time one variant and write its candidates and figures."""
    from distilqa.augment.augment import GROUP_SIZE
    from distilqa.augment.baseline import baseline_propose
    from distilqa.augment.sources import MLMSource

    jobs = _jobs(paragraphs)
    source = MLMSource(model_dir, masks_per_copy=VARIANTS[variant])
    t0 = time.perf_counter()
    source.prepare(jobs, k)
    proposals = []
    for begin in range(0, len(jobs), GROUP_SIZE):
        group = jobs[begin : begin + GROUP_SIZE]
        if variant == "baseline":
            proposals += baseline_propose(source, group, k)
        else:
            proposals += source.propose(group, k)
    seconds = time.perf_counter() - t0
    words = sum(len(j.words) for j in jobs)
    mlm_words = sum(1 for row in proposals for name, _ in row if name == "mlm")
    result = {
        "variant": variant,
        "masks_per_copy": VARIANTS[variant],
        "paragraphs": len(jobs),
        "words": words,
        "mlm_words": mlm_words,
        "seconds": round(seconds, 2),
        "paragraphs_per_s": round(len(jobs) / seconds, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "proposals": [[c for _, c in row] for row in proposals],
    }
    Path(out).write_text(json.dumps(result))


def run_augment_benchmark(paragraphs: int, k: int, work_dir: str, output: str | None, variants: list[str]) -> int:
    import torch

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = _build_models(work)
    results = {}
    for variant in variants:
        out = work / f"augment-{variant}.json"
        cmd = [
            sys.executable,
            "-m",
            "distilqa.bench.augment_speed",
            variant,
            str(model_dir),
            str(paragraphs),
            str(k),
            str(out),
        ]
        print(f"bench augment: running {variant} ...", file=sys.stderr)
        subprocess.run(cmd, check=True)
        results[variant] = json.loads(out.read_text())
    rows = []
    base = results.get("baseline")
    for variant, r in results.items():
        row = {key: v for key, v in r.items() if key != "proposals"}
        if base and variant != "baseline":
            row["speedup_vs_baseline"] = round(r["paragraphs_per_s"] / base["paragraphs_per_s"], 2)
            row.update(_agreement(base["proposals"], r["proposals"], k))
        rows.append(row)
    report = {
        "machine": f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, torch {torch.__version__}",
        "model": "BERT MLM 6 layers x 384, 12 heads, FFN 1536, WordPiece vocab trained on the dev contexts (random init)",
        "candidates_k": k,
        "results": rows,
    }
    lines = [
        f"machine: {report['machine']}; {report['model']}; K={k}",
        "",
        "| variant | masks/copy | paragraphs | MLM words | seconds | paragraphs/s | speed-up | same top-1 | candidate overlap | max RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['masks_per_copy']} | {r['paragraphs']} | {r['mlm_words']} | {r['seconds']} | "
            f"{r['paragraphs_per_s']} | {r.get('speedup_vs_baseline', 1.0)}× | {r.get('same_top1', '—')} | "
            f"{r.get('candidate_overlap', '—')} | {r['max_rss_mb']} |"
        )
    print("\n".join(lines))
    if output:
        Path(output).write_text(json.dumps(report, indent=2))
    return 0


def _agreement(a: list[list[list[str]]], b: list[list[list[str]]], k: int) -> dict[str, float]:
    same_top1 = overlap = n = 0
    for row_a, row_b in zip(a, b, strict=True):
        for ca, cb in zip(row_a, row_b, strict=True):
            if not ca and not cb:
                continue
            n += 1
            same_top1 += bool(ca and cb and ca[0] == cb[0])
            overlap += len(set(ca) & set(cb)) / max(len(ca), len(cb), 1)
    return {
        "same_top1": round(same_top1 / n, 4) if n else 1.0,
        "candidate_overlap": round(overlap / n, 4) if n else 1.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("model_dir")
    parser.add_argument("paragraphs", type=int)
    parser.add_argument("k", type=int)
    parser.add_argument("out")
    a = parser.parse_args()
    run_variant(a.variant, a.model_dir, a.paragraphs, a.k, a.out)
