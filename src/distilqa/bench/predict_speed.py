"""How fast `distilqa predict` and `distilqa eval` are on this machine.

Models are randomly initialised RoBERTa encoders (768 wide, 12 heads, 3072 FFN: the shapes of
tinyroberta-squad2 at 6 layers and roberta-base-squad2 at 12), so the figure is about compute,
not accuracy. The tokenizer is a byte-level BPE trained on the dev contexts, which cuts words
into slightly more pieces than RoBERTa's own; the mean window length is reported alongside.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distilqa.squad import DEFAULT_DEV_SET, load_squad


def run_predict_benchmark(
    layers: list[int],
    limit: int,
    batch_size: int,
    threads: int,
    work_dir: str,
    output: str | None,
    precisions: list[str] | None = None,
    padding_comparison: bool = True,
) -> int:
    import torch

    from distilqa.inference import BatchConfig, QAModel
    from distilqa.progress import progress_bar
    from distilqa.windows import WindowConfig

    if threads:
        torch.set_num_threads(threads)
    dataset = load_squad()
    examples = dataset.examples()[:limit]
    window = WindowConfig()
    results: list[dict[str, Any]] = []
    for depth in layers:
        model_dir = bench_model(work_dir, depth)
        runs = [(p, True) for p in (precisions or ["fp32"])]
        if padding_comparison:
            runs.append(("fp32", False))
        for precision, sort in runs:
            model = QAModel.load(model_dir, precision)
            windower = model.windower(window)
            features = windower.features([e.question for e in examples], [e.context for e in examples])
            mean_len = sum(len(f.input_ids) for f in features) / len(features)
            model.answer(examples[: min(8, len(examples))], window)  # warm-up: allocator, kernels
            batch = BatchConfig(batch_size, sort_by_length=sort)
            label = f"{depth}L {model.precision} sort={sort}"
            t0 = time.perf_counter()
            model.answer(examples, window, batch=batch, progress=progress_bar(label, "window"))
            seconds = time.perf_counter() - t0
            results.append(
                {
                    "layers": depth,
                    "precision": model.precision,
                    "length_sorted_dynamic_padding": sort,
                    "questions": len(examples),
                    "windows": len(features),
                    "mean_window_tokens": round(mean_len, 1),
                    "seconds": round(seconds, 2),
                    "questions_per_s": round(len(examples) / seconds, 2),
                }
            )
            del model
    eval_timing = _time_eval(dataset)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__}",
        "batch_size": batch_size,
        "window": {
            "max_seq_len": window.max_seq_len,
            "doc_stride": window.doc_stride,
            "stride_mode": window.stride_mode,
        },
        "predict": results,
        "eval": eval_timing,
    }
    print(format_report(report))
    if output:
        Path(output).write_text(json.dumps(report, indent=2))
    return 0


def bench_model(work_dir: str | Path, depth: int) -> Path:
    """A random RoBERTa QA model, `depth` x 768 (tinyroberta at 6, roberta-base at 12), built once."""
    from distilqa.local_models import random_qa_model, train_tokenizer

    work = Path(work_dir)
    tok_dir = work / "tokenizer-bpe"
    if not (tok_dir / "tokenizer.json").exists():
        dataset = load_squad()
        contexts = list(dict.fromkeys(p.context for _, p, _ in dataset.iter_questions()))
        train_tokenizer(contexts, tok_dir, "bpe", vocab_size=16000)
    model_dir = work / f"roberta-{depth}l-768d"
    if not (model_dir / "config.json").exists():
        random_qa_model(tok_dir, model_dir, num_layers=depth, hidden_size=768, num_heads=12, intermediate_size=3072)
    return model_dir


def _time_eval(dataset: Any) -> dict[str, Any]:
    """Wall time of the `distilqa eval` command (start-up included) on every dev question."""
    preds = {}
    for _, paragraph, qa in dataset.iter_questions():
        words = paragraph.context.split()
        preds[qa.id] = "" if len(qa.id) % 3 == 0 else " ".join(words[:3])  # any deterministic answers
    with tempfile.TemporaryDirectory() as tmp:
        pred_file = Path(tmp) / "pred.json"
        pred_file.write_text(json.dumps(preds))
        cmd = [
            sys.executable,
            "-m",
            "distilqa.cli",
            "eval",
            str(DEFAULT_DEV_SET),
            str(pred_file),
            "-o",
            str(Path(tmp) / "e.json"),
        ]
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            runs.append(time.perf_counter() - t0)
    return {"questions": len(preds), "seconds_best_of_3": round(min(runs), 3)}


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"machine: {report['machine']}; batch {report['batch_size']}; window {report['window']}",
        "",
        "| layers | precision | dynamic padding | questions | windows | mean tokens | seconds | questions/s |",
        "|---:|:---:|:---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["predict"]:
        lines.append(
            f"| {r['layers']} | {r.get('precision', 'fp32')} | "
            f"{'sorted' if r['length_sorted_dynamic_padding'] else 'none (pad to 384)'} | "
            f"{r['questions']} | {r['windows']} | {r['mean_window_tokens']} | {r['seconds']} | {r['questions_per_s']} |"
        )
    e = report["eval"]
    lines += [
        "",
        f"distilqa eval on {e['questions']} questions: {e['seconds_best_of_3']} s (best of 3, start-up included)",
    ]
    return "\n".join(lines)
