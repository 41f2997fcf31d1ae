"""`distilqa bench serve`: the served model under closed-loop load, against transformers' pipeline.

A real `distilqa serve` process on loopback gets single-question V1 requests from C client threads
(closed loop: each sends its next question when the last answer arrives); throughput and latency
percentiles come from the clients' clocks. transformers' QuestionAnsweringPipeline (removed in
transformers 5.3, so it runs from a separate virtual environment with transformers 5.2) answers
the same questions with the same weights on the same CPU, one question at a time as a simple
server would. An optional soak keeps concurrency 16 for a while and reads the server's memory at
even intervals: growth over the whole soak, and of its second half's peak over the first's (a leak raises it).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from distilqa.squad import Example, load_squad

PIPELINE_SCRIPT = r"""
import json, sys, time
import transformers
from transformers import pipeline
model_dir, questions_file, out_file = sys.argv[1:4]
items = json.load(open(questions_file))
qa = pipeline("question-answering", model=model_dir, tokenizer=model_dir, device="cpu")
kwargs = dict(handle_impossible_answer=True, max_seq_len=384, doc_stride=128, max_question_len=64, max_answer_len=30)
qa(question=items[0]["question"], context=items[0]["context"], **kwargs)  # warm-up
t0 = time.perf_counter()
answers = [qa(question=i["question"], context=i["context"], **kwargs)["answer"] for i in items]
seconds = time.perf_counter() - t0
json.dump({"transformers": transformers.__version__, "seconds": seconds, "answers": answers}, open(out_file, "w"))
"""


def _post(url: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


SOAK_SAMPLES = 12  # RSS readings during a soak, besides its first and last


def rss_summary(samples_mb: list[float]) -> dict[str, Any]:
    """Growth over the whole soak, and of the second half's peak over the first half's.

    RSS under load swings by a few percent as batches come and go (glibc gives pages back), and the
    first minutes grow the heap (allocator arenas, tokenizer caches) and then stop. A leak keeps
    raising the peak, so the peak of the second half against that of the first tells them apart;
    a single start/end pair can land on a trough or a crest.
    """
    if len(samples_mb) < 2:
        raise ValueError("rss_summary needs at least 2 readings")
    start, end, half = samples_mb[0], samples_mb[-1], len(samples_mb) // 2
    first_peak, second_peak = max(samples_mb[:half]), max(samples_mb[half:])
    return {
        "rss_start_mb": round(start, 1),
        "rss_end_mb": round(end, 1),
        "rss_growth_pct": round(100 * (end - start) / start, 2),
        "rss_peak_mb": round(max(samples_mb), 1),
        "rss_peak_growth_second_half_pct": round(100 * (second_peak - first_peak) / first_peak, 2),
        "rss_samples_mb": [round(x, 1) for x in samples_mb],
    }


def closed_loop(url: str, examples: list[Example], concurrency: int, seconds: float | None = None) -> dict[str, Any]:
    """Send every example once (or cycle until `seconds` pass) from `concurrency` threads."""
    lock = threading.Lock()
    latencies: list[float] = []
    answers: dict[str, str] = {}
    errors: list[str] = []
    counter = iter(range(10**9))
    deadline = time.monotonic() + seconds if seconds else None

    def client() -> None:
        while True:
            with lock:
                n = next(counter)
            if deadline is None and n >= len(examples):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            e = examples[n % len(examples)]
            t0 = time.perf_counter()
            try:
                result = _post(url, {"instances": [{"question": e.question, "context": e.context}]})
                text = result["predictions"][0]["answer"]
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, it does not stop
                with lock:
                    errors.append(repr(exc)[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)
                answers[e.id] = text

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return (
            round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else float("nan")
        )

    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(wall, 2),
        "questions_per_s": round(len(latencies) / wall, 2),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else float("nan"),
        "answers": answers,
    }


def run_serve_benchmark(
    model: str | None,
    questions: int,
    concurrency: int,
    precision: str,
    pipeline_python: str | None,
    soak_seconds: float,
    work_dir: str,
    output: str | None,
    server_args: list[str] | None = None,
    workers: int | None = None,
) -> int:
    from distilqa.bench.predict_speed import bench_model
    from distilqa.inference import DEFAULT_WORKERS, QAModel, parallel_batch, resolve_precision
    from distilqa.serving.process import ServerProcess

    model_dir = Path(model) if model else bench_model(work_dir, 6)
    examples = load_squad().examples()[:questions]
    report: dict[str, Any] = {
        "model": str(model_dir),
        "questions": len(examples),
        "concurrency": concurrency,
        "server_args": server_args or [],
    }

    served = resolve_precision(precision)
    expected: dict[str, dict[str, str]] = {}  # `distilqa predict` answers: fp32, and at the served precision
    batch = parallel_batch(workers or DEFAULT_WORKERS)  # predict's thread layout = the server's (its --workers)
    for p in dict.fromkeys(("fp32", served)):
        reference = QAModel.load(model_dir, p).answer(examples, batch=batch)
        expected[p] = {e.id: a.text for e, a in zip(examples, reference, strict=True)}
        del reference

    log = Path(work_dir) / "bench-serve.log"
    with ServerProcess(model_dir, "--precision", precision, *(server_args or []), log=log) as server:
        url = f"{server.url}/v1/models/distilqa:predict"
        closed_loop(url, examples[: 2 * concurrency], concurrency)  # warm-up
        run = closed_loop(url, examples, concurrency)
        answers = run.pop("answers")
        run["precision"] = served
        for p in expected:
            run[f"same_answers_as_{p}_predict"] = round(
                sum(answers.get(e.id) == expected[p][e.id] for e in examples) / len(examples), 4
            )
        report["distilqa"] = run
        if soak_seconds > 0:
            closed_loop(url, examples, 16, seconds=min(10.0, soak_seconds / 6))  # settle the allocator
            samples, stop = [_rss_mb(server.pid)], threading.Event()

            def sample() -> None:
                while not stop.wait(soak_seconds / SOAK_SAMPLES):
                    samples.append(_rss_mb(server.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            soak = closed_loop(url, examples, 16, seconds=soak_seconds)
            stop.set()
            sampler.join()
            soak.pop("answers")
            samples.append(_rss_mb(server.pid))
            soak.update(seconds_target=soak_seconds, **rss_summary(samples))
            report["soak"] = soak

    if pipeline_python:
        with tempfile.TemporaryDirectory() as tmp:
            qfile, out = Path(tmp) / "q.json", Path(tmp) / "out.json"
            qfile.write_text(json.dumps([{"question": e.question, "context": e.context} for e in examples]))
            script = Path(tmp) / "pipeline_bench.py"
            script.write_text(PIPELINE_SCRIPT)
            print("bench serve: running transformers' QuestionAnsweringPipeline ...", file=sys.stderr)
            subprocess.run([pipeline_python, str(script), str(model_dir), str(qfile), str(out)], check=True)
            result = json.loads(out.read_text())
        same = sum(a == expected["fp32"][e.id] for e, a in zip(examples, result["answers"], strict=True))
        report["pipeline"] = {
            "transformers": result["transformers"],
            "seconds": round(result["seconds"], 2),
            "questions_per_s": round(len(examples) / result["seconds"], 2),
            "same_answers_as_distilqa_fp32": round(same / len(examples), 4),
        }
        report["speedup_vs_pipeline"] = round(
            report["distilqa"]["questions_per_s"] / report["pipeline"]["questions_per_s"], 2
        )
    print(format_report(report))
    if output:
        Path(output).write_text(json.dumps(report, indent=2))
    return 0


def format_report(r: dict[str, Any]) -> str:
    d = r["distilqa"]
    lines = [
        f"model {r['model']}; {r['questions']} dev questions, one per request; closed loop, concurrency {r['concurrency']}",
        "",
        "| server | precision | questions/s | p50 ms | p95 ms | p99 ms | errors | same answers as fp32 predict "
        "| same answers as predict at its precision |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| distilqa serve (KServe, micro-batching) | {d['precision']} | {d['questions_per_s']} | {d['p50_ms']} | "
        f"{d['p95_ms']} | {d['p99_ms']} | {d['errors']} | {d['same_answers_as_fp32_predict']:.1%} "
        f"| {d['same_answers_as_' + d['precision'] + '_predict']:.1%} |",
    ]
    if "pipeline" in r:
        p = r["pipeline"]
        lines.append(
            f"| transformers {p['transformers']} QuestionAnsweringPipeline, sequential | fp32 | {p['questions_per_s']} | "
            f"| | | | {p['same_answers_as_distilqa_fp32']:.1%} | |"
        )
        lines += ["", f"speed-up over the pipeline: {r['speedup_vs_pipeline']}x"]
    if "soak" in r:
        s = r["soak"]
        lines += [
            "",
            f"soak: {s['seconds']} s at concurrency 16, {s['requests']} requests, {s['errors']} errors, "
            f"p99 {s['p99_ms']} ms, RSS {s['rss_start_mb']} -> {s['rss_end_mb']} MB ({s['rss_growth_pct']:+.2f}%; "
            f"peak {s['rss_peak_mb']} MB, second half's peak over the first's {s['rss_peak_growth_second_half_pct']:+.2f}%)",
        ]
    return "\n".join(lines)
