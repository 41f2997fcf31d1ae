"""Features/s and bytes per feature of the training data path: the Arrow feature cache against the
in-memory padded tensors it replaces, on the bundled dev set repeated `repeat` times.

Each measurement runs in its own process, so its memory is its own. Memory is read from
/proc/self/status after the data is loaded: RssAnon (private to the process: what each rank pays)
and RssFile (file pages: a memory-mapped cache is shared by every rank of a node through the page
cache), and VmHWM for the peak. Measurements:
  memory  the in-memory path: padded int64 tensors (`distilqa.distill.finetune.qa_tensors`);
  build   local rank 0 tokenizing into an empty Arrow cache (`Dataset.map`, `num_proc` processes);
  open    another rank opening the finished cache, then one pass over every feature in batches of 32;
  stream  S1's corpus (the dev contexts `repeat` times over, as four .jsonl.zst shards) streamed and
          packed into 384-token sequences by one rank (`distilqa.corpus.CorpusStream`): its memory
          must not grow with the corpus.
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

MODES = ("memory", "build", "open", "stream")
SHARDS = 4


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


def write_corpus(repeat: int, directory: Path) -> int:
    """The dev contexts `repeat` times over as .jsonl.zst shards; returns the number of documents."""
    import zstandard

    from distilqa.squad import load_squad

    contexts = list(dict.fromkeys(p.context for _, p, _ in load_squad().iter_questions()))
    directory.mkdir(parents=True, exist_ok=True)
    for shard in range(SHARDS):
        lines = (json.dumps({"text": c}) + "\n" for k in range(repeat) for c in contexts[shard::SHARDS])
        (directory / f"part-{shard}.jsonl.zst").write_bytes(zstandard.compress("".join(lines).encode()))
    return repeat * len(contexts)


def measure_stream(corpus: str, tokenizer_dir: str) -> dict[str, Any]:
    """Child process: one rank streaming the whole corpus, 32 sequences at a time, as S1 reads it."""
    from transformers import AutoTokenizer

    from distilqa.corpus import CorpusStream, corpus_shards

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stream = CorpusStream(corpus_shards(corpus), tokenizer, 384)
    before = _status()
    t0 = time.perf_counter()
    sequences = stream.count(0)
    seconds = time.perf_counter() - t0
    after = _status()
    return {
        "mode": "stream",
        "sequences": sequences,
        "seconds": round(seconds, 3),
        "sequences_per_s": round(sequences / seconds, 1),
        "tokens_per_s": round(sequences * 384 / seconds, 1),
        "private_mb": round((after["RssAnon"] - before["RssAnon"]) / 1024, 1),
        "peak_mb": round((after["VmHWM"] - before["VmRSS"]) / 1024, 1),
        "corpus_mb_compressed": round(sum(p.stat().st_size for p in Path(corpus).iterdir()) / 2**20, 2),
    }


def measure(mode: str, repeat: int, tokenizer_dir: str, cache: str, num_proc: int) -> dict[str, Any]:
    """Child process: one measurement; figures in bytes per feature."""
    if mode == "stream":
        return measure_stream(cache, tokenizer_dir)
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


def run_data_benchmark(
    repeat: int,
    num_proc: int,
    tokenizer: str | None,
    work_dir: str,
    output: str | None,
    modes: tuple[str, ...] = MODES,
) -> int:
    """Runs `modes` (in MODES order; "open" needs "build"), prints a table and writes the JSON report."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = tokenizer or str(_tokenizer(work))
    cache, corpus = work / "feature-cache", work / "corpus"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    documents = write_corpus(repeat, corpus) if "stream" in modes else 0
    results = {}
    for mode in (m for m in MODES if m in modes):
        print(f"bench data: {mode} (dev x{repeat}) ...", file=sys.stderr)
        out = work / f"data-{mode}.json"
        where = corpus if mode == "stream" else cache
        cmd = [sys.executable, "-m", "distilqa.bench.data_speed", mode, str(repeat), tokenizer_dir, str(where)]
        subprocess.run([*cmd, str(num_proc), str(out)], check=True)
        results[mode] = json.loads(out.read_text())
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(corpus, ignore_errors=True)
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores",
        "tokenizer": tokenizer or "byte-level BPE, 50k vocabulary, trained on the dev contexts",
        "repeat": repeat,
        "num_proc": num_proc,
        "results": results,
    }
    lines = []
    table = [("memory", "in-memory tensors"), ("build", "Arrow: build (rank 0)"), ("open", "Arrow: open")]
    shown = [(mode, name) for mode, name in table if mode in results]
    if shown:
        first = results[shown[0][0]]
        lines += [
            f"dev x{repeat}: {first['questions']} questions, {first['features']} features; num_proc {num_proc}",
            "",
            "| path | seconds | features/s | private bytes/feature | peak bytes/feature |",
            "|---|---:|---:|---:|---:|",
        ]
    for mode, name in shown:
        r = results[mode]
        lines.append(
            f"| {name} | {r['seconds']} | {r['features_per_s']} | {r['anon_bytes_per_feature']} | "
            f"{r['peak_bytes_per_feature']} |"
        )
    if "memory" in results:
        for mode in ("build", "open"):
            if mode in results:
                speedup = results[mode]["features_per_s"] / results["memory"]["features_per_s"]
                report[f"{mode}_speedup_vs_memory"] = round(speedup, 2)
    if "open" in results:
        opened = results["open"]
        lines.append(
            f"\nafter a full pass over the opened cache: {opened['anon_bytes_per_feature_after_pass']} private and "
            f"{opened['file_bytes_per_feature_after_pass']} shared (page cache) bytes per feature; "
            f"the cache holds {opened['cache_bytes_per_feature']} bytes per feature on disk"
        )
    if "stream" in results:
        stream = results["stream"]
        stream["documents"] = documents
        lines.append(
            f"\nS1 stream ({documents} documents, {stream['corpus_mb_compressed']} MB of .jsonl.zst): "
            f"{stream['sequences']} sequences of 384 tokens in {stream['seconds']} s "
            f"({stream['tokens_per_s']:.0f} tokens/s); {stream['private_mb']} MB private, {stream['peak_mb']} MB peak"
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
