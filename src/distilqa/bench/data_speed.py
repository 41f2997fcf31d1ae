"""Features/s and bytes per feature of the training data path: the Arrow feature cache against the
in-memory padded tensors it replaces, on the bundled dev set repeated `repeat` times.

Each measurement runs in its own process, so its memory is its own. Memory is read from
/proc/self/status after the data is loaded: RssAnon (private to the process: what each rank pays)
and RssFile (file pages: a memory-mapped cache is shared by every rank of a node through the page
cache), and VmHWM for the peak. Measurements:
  memory  the in-memory path: padded int64 tensors (`distilqa.distill.finetune.qa_tensors`);
  build   local rank 0 tokenizing into an empty Arrow cache (`Dataset.map`, `num_proc` processes);
  open    another rank opening the finished cache, then one pass over every feature in batches of 32.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("memory", "build", "open")


def repeated_dev(repeat: int) -> Any:
    """The bundled dev set `repeat` times over, question ids made unique (what a 20x augmented set weighs)."""
    from distilqa.squad import SquadDataset, load_squad

    dev = load_squad()
    articles = []
    for k in range(repeat):
        for article in dev.articles:
            copied = copy.deepcopy(article)
            for paragraph in copied.paragraphs:
                for qa in paragraph.qas:
                    qa.id = f"{qa.id}-{k}"
            articles.append(copied)
    return SquadDataset(articles, dev.version, f"dev x{repeat}")


def _status() -> dict[str, int]:
    """kB figures of /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def measure(mode: str, repeat: int, tokenizer_dir: str, cache: str, num_proc: int) -> dict[str, Any]:
    """Child process: one measurement; figures in bytes per feature."""
    from transformers import AutoTokenizer

    from distilqa.distill.finetune import qa_tensors  # imports (torch, datasets) before the baseline
    from distilqa.features import FeatureTable, build_features
    from distilqa.windows import WindowConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dataset = repeated_dev(repeat)
    window = WindowConfig()
    before = _status()
    t0 = time.perf_counter()
    if mode == "memory":
        data = qa_tensors(dataset, tokenizer, window)
        features = len(data["input_ids"])
    else:
        path, built = build_features(dataset, tokenizer, window, cache, num_proc)
        assert built == (mode == "build"), f"{mode}: the cache was {'built' if built else 'found'}"
        table = FeatureTable(path)
        features = len(table)
    seconds = time.perf_counter() - t0
    after = _status()
    result: dict[str, Any] = {
        "mode": mode,
        "questions": dataset.num_questions,
        "features": features,
        "seconds": round(seconds, 3),
        "features_per_s": round(features / seconds, 1),
        "anon_bytes_per_feature": round((after["RssAnon"] - before["RssAnon"]) * 1024 / features, 1),
        "peak_bytes_per_feature": round((after["VmHWM"] - before["VmRSS"]) * 1024 / features, 1),
    }
    if mode == "build":  # the tokenizing processes' own peak
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        result["worker_max_rss_mb"] = round(children / 1024, 1)
    if mode == "open":
        t1 = time.perf_counter()
        for begin in range(0, features, 32):
            table.batch(range(begin, min(begin + 32, features)))
        passed = _status()
        result["full_pass_seconds"] = round(time.perf_counter() - t1, 2)
        result["anon_bytes_per_feature_after_pass"] = round(
            (passed["RssAnon"] - before["RssAnon"]) * 1024 / features, 1
        )
        result["file_bytes_per_feature_after_pass"] = round(
            (passed["RssFile"] - before["RssFile"]) * 1024 / features, 1
        )
        result["cache_bytes_per_feature"] = round(sum(f.stat().st_size for f in Path(path).iterdir()) / features, 1)
    return result


def _tokenizer(work: Path) -> Path:
    """A RoBERTa-style byte-level BPE (50k vocabulary) trained on the dev contexts: no hub here."""
    from distilqa.local_models import train_tokenizer
    from distilqa.squad import load_squad

    directory = work / "tokenizer-bpe-50k"
    if not (directory / "tokenizer.json").is_file():
        contexts = list(dict.fromkeys(p.context for _, p, _ in load_squad().iter_questions()))
        train_tokenizer(contexts, directory, "bpe", vocab_size=50000)
    return directory


def run_data_benchmark(repeat: int, num_proc: int, tokenizer: str | None, work_dir: str, output: str | None) -> int:
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = tokenizer or str(_tokenizer(work))
    cache = work / "feature-cache"
    shutil.rmtree(cache, ignore_errors=True)
    results = {}
    for mode in MODES:
        print(f"bench data: {mode} (dev x{repeat}) ...", file=sys.stderr)
        out = work / f"data-{mode}.json"
        cmd = [sys.executable, "-m", "distilqa.bench.data_speed", mode, str(repeat), tokenizer_dir, str(cache)]
        subprocess.run([*cmd, str(num_proc), str(out)], check=True)
        results[mode] = json.loads(out.read_text())
    shutil.rmtree(cache, ignore_errors=True)
    memory, build, opened = (results[m] for m in MODES)
    report = {
        "machine": f"{os.cpu_count()} cores",
        "tokenizer": tokenizer or "byte-level BPE, 50k vocabulary, trained on the dev contexts",
        "repeat": repeat,
        "num_proc": num_proc,
        "results": results,
        "build_speedup_vs_memory": round(build["features_per_s"] / memory["features_per_s"], 2),
        "open_speedup_vs_memory": round(opened["features_per_s"] / memory["features_per_s"], 1),
    }
    lines = [
        f"dev x{repeat}: {memory['questions']} questions, {memory['features']} features; num_proc {num_proc}",
        "",
        "| path | seconds | features/s | private bytes/feature | peak bytes/feature |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, name in (("memory", "in-memory tensors"), ("build", "Arrow: build (rank 0)"), ("open", "Arrow: open")):
        r = results[mode]
        lines.append(
            f"| {name} | {r['seconds']} | {r['features_per_s']} | {r['anon_bytes_per_feature']} | "
            f"{r['peak_bytes_per_feature']} |"
        )
    lines.append(
        f"\nafter a full pass over the opened cache: {opened['anon_bytes_per_feature_after_pass']} private and "
        f"{opened['file_bytes_per_feature_after_pass']} shared (page cache) bytes per feature; "
        f"the cache holds {opened['cache_bytes_per_feature']} bytes per feature on disk"
    )
    print("\n".join(lines))
    if output:
        Path(output).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("repeat", type=int)
    parser.add_argument("tokenizer")
    parser.add_argument("cache")
    parser.add_argument("num_proc", type=int)
    parser.add_argument("out")
    a = parser.parse_args()
    Path(a.out).write_text(json.dumps(measure(a.mode, a.repeat, a.tokenizer, a.cache, a.num_proc)))
