"""Kill a training stage under torchrun after its first checkpoint, rerun it, and compare the weights.

What a retried pod does, on whatever this machine has (GPUs: NCCL; CPUs: gloo). Models are built
here (a tokenizer trained on the shipped dev set, random-init encoders), so nothing is downloaded:

1. an uninterrupted run of the stage (`distilqa distill`), which also saves its job.yaml;
2. a second uninterrupted run: the run-to-run floor (GPU kernels such as the embedding backward
   use atomics, so two clean runs can differ in the last bits);
3. the saved job under `torchrun --nproc-per-node N -m distilqa.train`, SIGKILLed with its whole
   process group once checkpoint K is committed, then the same command again.

Prints (and with --output writes) a JSON summary: steps, where it resumed, and the largest weight
difference resumed-vs-uninterrupted next to the floor.

    python scripts/rehearse_resume.py --work-dir /tmp/resume --nproc 1 --output resume.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def sh(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode:
        sys.exit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return result


def build(work: Path, layers: int, hidden: int, heads: int, articles: int) -> tuple[Path, Path, Path]:
    from distilqa.local_models import random_qa_model, train_tokenizer
    from distilqa.squad import load_squad, write_squad

    dev = load_squad()
    tokenizer, teacher, student, data = work / "tokenizer", work / "teacher", work / "student", work / "train.json"
    if not (teacher / "config.json").exists():
        contexts = list(dict.fromkeys(p.context for _, p, _ in dev.iter_questions()))
        train_tokenizer(contexts, tokenizer, "bpe", vocab_size=8000)
        random_qa_model(tokenizer, teacher, num_layers=layers, hidden_size=hidden, num_heads=heads, seed=1)
        sh(str(BIN / "distilqa"), "make-student", str(teacher), "-o", str(student), "--layers", str(layers // 2))
        write_squad(dev.select_articles(list(range(articles))), data)
    return teacher, student, data


def max_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--stage", default="intermediate", choices=("intermediate", "finetune"))
    ap.add_argument("--nproc", type=int, default=1, help="processes (GPUs) of the torchrun runs")
    ap.add_argument("--layers", type=int, default=4, help="teacher layers (the student keeps every 2nd)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--articles", type=int, default=4, help="dev articles to train on")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--output", help="also write the summary JSON here")
    args = ap.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    teacher, student, data = build(work, args.layers, args.hidden, args.heads, args.articles)
    if args.stage == "intermediate":
        head = ["distill", "--stage", "intermediate", "--teacher", str(teacher), "--student", str(student), str(data)]
    else:
        head = ["finetune", str(student), str(data)]
    settings = [
        "--max-seq-len",
        "384",
        "--doc-stride",
        "128",
        "--epochs",
        str(args.epochs),
        "--batch-size",
        "16",
        "--per-device-batch-size",
        str(16 // args.nproc),
        "--amp",
        args.amp,
        "--checkpoint-every",
        str(args.checkpoint_every),
        "--nproc-per-node",
        str(args.nproc),
    ]
    runs = {}
    for name in ("full", "floor"):
        t0 = time.perf_counter()
        sh(
            str(BIN / "distilqa"),
            *head,
            "-o",
            str(work / name),
            *settings,
            "--checkpoint-dir",
            str(work / f"{name}-ckpt"),
        )
        runs[name] = round(time.perf_counter() - t0, 1)
    record = json.loads((work / "full" / "training_record.json").read_text())["result"]

    import yaml

    from distilqa.distill.launch import kill_tree

    job = yaml.safe_load((work / "full" / "job.yaml").read_text())
    job["output_dir"], job["checkpoint_dir"] = str(work / "resumed"), str(work / "resumed-ckpt")
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    torchrun = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={args.nproc}", "-m", "distilqa.train"]
    marker = work / "resumed-ckpt" / f"checkpoint-{args.checkpoint_every}" / "meta.json"
    proc = subprocess.Popen(
        [*torchrun, str(work / "job.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not marker.exists():
        if proc.poll() is not None:
            sys.exit("the torchrun run ended before its first checkpoint: raise --epochs")
        time.sleep(0.02)
    kill_tree(proc.pid)  # the launcher and its workers (they run in sessions of their own)
    proc.wait()
    if (work / "resumed" / "model.safetensors").exists():
        sys.exit("the run finished before it was killed: raise --epochs")
    sh(*torchrun, str(work / "job.yaml"))
    resumed = json.loads((work / "resumed" / "training_record.json").read_text())["result"]
    summary = {
        "stage": args.stage,
        "processes": args.nproc,
        "precision": record["precision"],
        "steps": record["steps"],
        "resumed_from_step": resumed["resumed_from_step"],
        "seconds_uninterrupted": runs["full"],
        "max_abs_difference_resumed": max_difference(work / "full", work / "resumed"),
        "max_abs_difference_two_uninterrupted_runs": max_difference(work / "full", work / "floor"),
    }
    summary["bit_identical"] = summary["max_abs_difference_resumed"] == 0.0
    print(json.dumps(summary, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
