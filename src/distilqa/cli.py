"""The `distilqa` command.

Start-up time matters: this module imports only the standard library. Each command imports what
it needs when it runs (`distilqa eval` never loads torch, transformers, kfp or mlflow). Problems
with the user's input raise `DistilqaError` and end here as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from distilqa import __version__
from distilqa.errors import ConfigError, DistilqaError
from distilqa.progress import progress_bar

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args) or 0
    except DistilqaError as exc:
        print(f"distilqa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from distilqa.distill.launch import LaunchFailed

        if not isinstance(exc, LaunchFailed):
            raise
        print(f"distilqa {args.command}: {exc}", file=sys.stderr)
        return exc.exitcode
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distilqa",
        description="Distil extractive question-answering models, evaluate them and serve them.",
    )
    parser.add_argument("--version", action="version", version=f"distilqa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_eval(sub)
    _add_predict(sub)
    _add_serve(sub)
    _add_finetune(sub)
    _add_distill(sub)
    _add_train(sub)
    _add_make_student(sub)
    _add_pipeline(sub)
    _add_augment(sub)
    _add_bench(sub)
    return parser


# ---------------------------------------------------------------------------------------- eval


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="official SQuAD 2.0 evaluation (drop-in for evaluate-v2.0.py)",
        description="Official evaluation for SQuAD version 2.0: the same arguments, JSON keys and values "
        "as evaluate-v2.0.py. Files may be local (plain or .gz), https:// or s3://.",
    )
    p.add_argument("data_file", metavar="data.json", help="input data JSON file")
    p.add_argument("pred_file", metavar="pred.json", help="model predictions")
    p.add_argument("--out-file", "-o", metavar="eval.json", help="write accuracy metrics to file (default is stdout)")
    p.add_argument("--na-prob-file", "-n", metavar="na_prob.json", help="model estimates of probability of no answer")
    p.add_argument(
        "--na-prob-thresh",
        "-t",
        type=float,
        default=1.0,
        help='predict "" if no-answer probability exceeds this (default = 1.0)',
    )
    p.add_argument(
        "--out-image-dir", "-p", metavar="out_images", default=None, help="save precision-recall curves to directory"
    )
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument(
        "--format",
        choices=("json", "table"),
        default="json",
        help="json (default) prints exactly what evaluate-v2.0.py prints; table is for people",
    )
    p.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from distilqa.metric import evaluate, load_na_probs, load_predictions
    from distilqa.squad import load_squad

    dataset = load_squad(args.data_file)
    preds = load_predictions(args.pred_file)
    na_probs = load_na_probs(args.na_prob_file) if args.na_prob_file else None
    known = dataset.has_answer()
    extra = [qid for qid in preds if qid not in known]
    if extra:
        print(f"warning: {len(extra)} prediction(s) for ids not in {args.data_file} are ignored", file=sys.stderr)
    if na_probs is not None:
        na_probs = {k: v for k, v in na_probs.items() if k in known}
    out_eval = evaluate(dataset, preds, na_probs, args.na_prob_thresh, args.out_image_dir)
    if args.out_file:
        from distilqa import storage

        storage.write_bytes(args.out_file, json.dumps(out_eval).encode())
    if args.format == "table":
        print(format_eval_table(out_eval, title=args.pred_file))
    elif not args.out_file:
        print(json.dumps(out_eval, indent=2))
    return 0


def format_eval_table(out_eval: dict[str, Any], title: str = "") -> str:
    rows = [("", "EM", "F1", "questions")]
    for label, prefix in (("all", ""), ("HasAns", "HasAns_"), ("NoAns", "NoAns_")):
        if f"{prefix}exact" in out_eval:
            rows.append(
                (
                    label,
                    f"{out_eval[prefix + 'exact']:.2f}",
                    f"{out_eval[prefix + 'f1']:.2f}",
                    str(out_eval[prefix + "total"]),
                )
            )
    if "best_exact" in out_eval:
        rows.append(("best (tuned)", f"{out_eval['best_exact']:.2f}", f"{out_eval['best_f1']:.2f}", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [title] if title else []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- predict


def _add_window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-seq-len", type=int, default=384, help="tokens per window (default 384)")
    p.add_argument("--doc-stride", type=int, default=128, help="see --stride-mode (default 128)")
    p.add_argument(
        "--stride-mode",
        choices=("step", "overlap"),
        default="step",
        help="doc-stride is the step between windows (step, the seed recipe's) or their overlap (overlap, "
        "transformers' tokenizer stride); default step",
    )
    p.add_argument("--max-query-length", type=int, default=64, help="question tokens kept (default 64)")


def _add_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-best", type=int, default=20, help="start/end candidates per window (default 20)")
    p.add_argument("--max-answer-length", type=int, default=30, help="tokens (default 30)")
    p.add_argument(
        "--null-score-diff-threshold",
        type=float,
        default=0.0,
        help='answer "" when null score - best span score exceeds this (default 0.0)',
    )


def _add_workers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="forward passes at once, each on its share of the cores (default 2). `predict` and `serve` "
        "split the cores alike, so that they answer alike: bf16 results depend on the thread count",
    )


def _workers(args: argparse.Namespace) -> int:
    from distilqa.errors import ConfigError
    from distilqa.inference import DEFAULT_WORKERS

    workers = DEFAULT_WORKERS if args.workers is None else args.workers
    if workers < 1:
        raise ConfigError(f"--workers must be positive, got {workers}")
    return workers


def _add_precision_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "int8"),
        default="auto",
        help="auto (default: bf16 on CPUs with AMX, else int8 on CPUs with VNNI, else bf16 where the CPU has "
        "native bf16, else int8 on AVX2 CPUs, else fp32), fp32, bf16 weights, or int8 Linear layers quantised "
        "per window; predict and serve give identical answers at the same precision and --workers, however "
        "questions are batched",
    )


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="answer every question of a SQuAD file with a QA model",
        description="Batched inference of a Hugging Face extractive-QA model over a SQuAD 1.1/2.0 file, "
        "writing the official predictions format.",
    )
    p.add_argument("model", nargs="?", help="model directory, s3:// prefix, or hub id")
    p.add_argument("data", nargs="?", help="SQuAD JSON file (local, .gz, https:// or s3://)")
    p.add_argument("-o", "--output", help="predictions JSON to write (local or s3://)")
    client = p.add_argument_group("client mode: ask a running `distilqa serve` instead of a local model")
    client.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8080")
    client.add_argument("--question")
    client.add_argument("--context")
    client.add_argument("--model-name", default="distilqa", help="the served model's name (default distilqa)")
    client.add_argument("--top-k", type=int, default=1)
    p.add_argument("--na-prob-out", help="also write per-question no-answer probabilities (for --na-prob-file)")
    _add_window_args(p)
    _add_decode_args(p)
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass (default 32)")
    p.add_argument("--no-sort", action="store_true", help="pad every window to max-seq-len in input order (slow)")
    _add_precision_arg(p)
    _add_workers_arg(p)
    p.add_argument("--limit", type=int, help="only the first N questions (quick checks)")
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    if args.url:
        return _run_predict_client(args)
    from distilqa.errors import ConfigError

    if not (args.model and args.data and args.output):
        raise ConfigError(
            "give MODEL DATA -o PRED.json (batch mode), or --url URL --question Q --context C (client mode)"
        )
    from distilqa import storage
    from distilqa.decode import DecodeConfig
    from distilqa.squad import load_squad
    from distilqa.windows import WindowConfig

    window = WindowConfig(args.max_seq_len, args.doc_stride, args.stride_mode, args.max_query_length)
    decode = DecodeConfig(args.n_best, args.max_answer_length, args.null_score_diff_threshold)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be a positive integer, got {args.limit}")
    from distilqa.inference import QAModel, parallel_batch

    batch = parallel_batch(_workers(args), batch_size=args.batch_size, sort_by_length=not args.no_sort)
    dataset = load_squad(args.data)
    examples = dataset.examples()[: args.limit]
    t0 = time.perf_counter()
    model = QAModel.load(args.model, args.precision)
    t1 = time.perf_counter()
    answers = model.answer(examples, window, decode, batch, progress=progress_bar("predict", "window"))
    t2 = time.perf_counter()
    preds = {e.id: a.text for e, a in zip(examples, answers, strict=True)}
    storage.write_bytes(args.output, json.dumps(preds, ensure_ascii=False, indent=1).encode())
    if args.na_prob_out:
        na = {e.id: a.na_prob for e, a in zip(examples, answers, strict=True)}
        storage.write_bytes(args.na_prob_out, json.dumps(na, indent=1).encode())
    rate = len(examples) / (t2 - t1) if t2 > t1 else float("inf")
    print(
        f"predict: {len(examples)} questions in {t2 - t1:.1f}s ({rate:.1f} questions/s, {model.precision}; "
        f"model load {t1 - t0:.1f}s) "
        f"-> {args.output}",
        file=sys.stderr,
    )
    return 0


def _run_predict_client(args: argparse.Namespace) -> int:
    from distilqa.errors import ConfigError
    from distilqa.serving.client import ask

    if args.model or args.data:
        raise ConfigError("--url asks a server: do not also give MODEL or DATA")
    if not args.question or not args.context:
        raise ConfigError("--url needs --question and --context")
    parameters = {
        "null_score_diff_threshold": args.null_score_diff_threshold,
        "max_answer_length": args.max_answer_length,
        "top_k": args.top_k,
    }
    result = ask(args.url, [{"question": args.question, "context": args.context}], args.model_name, parameters)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


# --------------------------------------------------------------------------------------- serve


def _add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a QA model with KServe (V1 and V2 protocols)",
        description="Start a KServe model server for an extractive-QA model directory. Binds loopback by default.",
    )
    p.add_argument("model", help="model directory or s3:// prefix")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--name", default="distilqa", help="model name in the URLs (default distilqa)")
    _add_window_args(p)
    _add_decode_args(p)
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=8,
        help="questions per micro-batch (default 8: leaves questions for the other workers)",
    )
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for company (default 5)")
    p.add_argument("--windows-per-forward", type=int, default=32)
    _add_workers_arg(p)
    p.add_argument("--max-instances", type=int, default=64, help="questions per request (default 64)")
    p.add_argument("--max-context-chars", type=int, default=100_000)
    p.add_argument("--price-per-second", type=float, default=0.0, help="compute price, reported per response")
    _add_precision_arg(p)
    p.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from distilqa.decode import DecodeConfig
    from distilqa.errors import ConfigError
    from distilqa.serving.batching import BatchingConfig
    from distilqa.serving.requests import Limits
    from distilqa.serving.settings import ServeSettings
    from distilqa.windows import WindowConfig

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 1 to 65535, got {args.port}")
    args.workers = _workers(args)
    for flag in ("max_batch_size", "windows_per_forward", "max_instances", "max_context_chars"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if not 0 <= args.max_wait_ms <= 10_000 or args.price_per_second < 0:
        raise ConfigError("--max-wait-ms must be within [0, 10000] and --price-per-second not negative")
    settings = ServeSettings(
        window=WindowConfig(args.max_seq_len, args.doc_stride, args.stride_mode, args.max_query_length),
        decode=DecodeConfig(args.n_best, args.max_answer_length, args.null_score_diff_threshold),
        batching=BatchingConfig(args.max_batch_size, args.max_wait_ms / 1000.0, args.workers),
        limits=Limits(max_instances=args.max_instances, max_context_chars=args.max_context_chars),
        windows_per_forward=args.windows_per_forward,
        price_per_second=args.price_per_second,
        precision=args.precision,
    )
    from distilqa.serving.server import serve

    model = args.model
    if model.startswith("models:/"):  # a registered version: fetched from MLflow's artifact store
        from distilqa.registry import resolve_models_uri

        model = str(resolve_models_uri(model))
    serve(model, host=args.host, port=args.port, name=args.name, settings=settings)
    return 0


# ------------------------------------------------------------------------------------ finetune


def _add_train_args(
    p: argparse.ArgumentParser, settings: tuple[type, ...], exclude: frozenset[str] = frozenset()
) -> None:
    """The stage's settings as flags (from the classes in distilqa.distill.config), plus where it runs."""
    from distilqa.settings import add_arguments

    group = p.add_argument_group("training settings")
    seen: set[str] = set()
    for cls in settings:
        add_arguments(group, cls, exclude=exclude, seen=seen)
    p.add_argument("--checkpoint-dir", default="", help="checkpoints: a directory or s3:// prefix (default: OUTPUT)")
    p.add_argument(
        "--write-job",
        metavar="JOB.yaml",
        help="only write the stage's job file (run it later with `distilqa train` or torchrun on each node)",
    )
    _add_launch_args(p)


def _add_launch_args(p: argparse.ArgumentParser) -> None:
    from distilqa.distill.launch import LaunchConfig
    from distilqa.settings import add_arguments

    add_arguments(p.add_argument_group("processes (torchrun: 1 or N per node, 1 or M nodes)"), LaunchConfig)


def _launch_config(args: argparse.Namespace) -> Any:
    from distilqa.distill.launch import LaunchConfig
    from distilqa.settings import from_namespace

    return from_namespace(LaunchConfig, args)


def _window_config(args: argparse.Namespace) -> Any:
    from distilqa.windows import WindowConfig

    return WindowConfig(args.max_seq_len, args.doc_stride, args.stride_mode, args.max_query_length)


def _add_finetune(sub: Any) -> None:
    from distilqa.distill.config import TrainConfig

    p = sub.add_parser(
        "finetune",
        help="extractive-QA fine-tuning (teachers that are base LMs; the no-distillation baseline)",
        description="Fine-tune a model directory (or s3:// prefix) on a SQuAD file. Resumes from the newest "
        "checkpoint in --checkpoint-dir (default OUTPUT). --nproc-per-node N trains with DDP on N processes "
        "(`distilqa train` runs the same job from a file).",
    )
    p.add_argument("model")
    p.add_argument("train_data", help="SQuAD JSON (local, .gz, https:// or s3://)")
    p.add_argument("-o", "--output", required=True, help="output model directory")
    _add_window_args(p)
    _add_train_args(p, (TrainConfig,))
    _add_features_args(p)
    p.set_defaults(handler=_run_finetune)


def _add_features_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--features-cache",
        default="",
        help="SQuAD stages: Arrow feature cache, a directory or an s3:// prefix shared by every step and node "
        "(default $DISTILQA_CACHE/features)",
    )
    p.add_argument("--features-num-proc", type=int, default=1, help="processes that tokenize a new feature cache")


def _wall(result: dict[str, Any]) -> str:
    """A resumed stage's seconds: this run's and, when its checkpoints carried them, every run's."""
    total = result.get("wall_seconds_total")
    if result.get("resumed_from_step") is None or total is None:
        return f"{result['wall_seconds']}s"
    return f"{result['wall_seconds']}s this run, {total}s in all"


def _run_finetune(args: argparse.Namespace) -> int:
    from distilqa.distill.config import StageJob, TrainConfig
    from distilqa.settings import from_namespace

    job = StageJob(
        "finetune",
        args.train_data,
        args.output,
        from_namespace(TrainConfig, args),
        _window_config(args),
        model=args.model,
        features_cache=args.features_cache,
        features_num_proc=args.features_num_proc,
        checkpoint_dir=args.checkpoint_dir,
    )
    _launch_or_write(job, args)
    return 0


def _launch_or_write(job: Any, args: argparse.Namespace) -> None:
    """Run the stage and report it, or with --write-job only write its validated job file."""
    if getattr(args, "write_job", None):
        job.write(args.write_job)
        print(f"{job.stage}: job written to {args.write_job}", file=sys.stderr)
        return
    from distilqa.distill.launch import launch

    _report(job, launch(job, _launch_config(args)))


def _report(job: Any, record: dict[str, Any]) -> None:
    """One line per finished stage (every rank's work ends in rank 0's record)."""
    if job.stage == "teacher_logits":
        state = "from the cache" if record["cached"] else "computed"
        print(f"teacher_logits: {record['features']} features {state} -> {job.logits_cache}", file=sys.stderr)
        return
    result = record["result"]
    detail = f"teacher logits {record['teacher_logits']}, " if "teacher_logits" in record else ""
    print(
        f"{record['stage']}: {detail}{result['steps']} steps ({result['steps_this_run']} this run) on "
        f"{result['world_size']} process(es) at {result['precision']}, loss {result['first_step_loss']:.4g} -> "
        f"{result['last_step_loss']:.4g}, {result['samples_per_s']} samples/s, {_wall(result)} -> {job.output_dir}",
        file=sys.stderr,
    )


def _add_distill(sub: Any) -> None:
    from distilqa.distill.config import GeneralConfig, PredictionConfig

    p = sub.add_parser(
        "distill",
        help="distillation stages: general (S1, text), intermediate (S2a, TinyBERT), prediction (S2b, cached logits)",
        description="Stage general (S1): a student built from the teacher (every k-th layer, or random init) learns "
        "its hidden states and attention scores on plain text, streamed from .txt/.txt.gz/.jsonl/.jsonl.zst shards "
        "(a file, a directory or an s3:// prefix) and resumable mid-corpus. Stage intermediate (S2a): the same loss on SQuAD features, teacher run "
        "online, projections when widths differ. Stage prediction (S2b): loss = mean[w*T^2*(KL_start+KL_end) + "
        "(1-w)*(CE_start+CE_end)/2], teacher logits computed once on the student's token ids and cached. "
        "Stage teacher_logits fills that cache alone (every process its share).",
    )
    p.add_argument("--stage", choices=("general", "intermediate", "teacher_logits", "prediction"), required=True)
    p.add_argument("--teacher", required=True, help="teacher model (directory, s3:// prefix or hub id)")
    p.add_argument("--student", help="intermediate/prediction/teacher_logits: the student QA model")
    p.add_argument(
        "train_data",
        help="SQuAD JSON (local, .gz, https:// or s3://); general: the text corpus (.txt, .txt.gz, .jsonl, .jsonl.zst "
        "shards: a file, a directory or an s3:// prefix)",
    )
    p.add_argument("-o", "--output", required=True)
    p.add_argument(
        "--logits-cache", help="prediction: teacher-logit cache directory (default $DISTILQA_CACHE/teacher-logits)"
    )
    g = p.add_argument_group("general (S1) student")
    g.add_argument("--student-layers", type=int, default=6)
    g.add_argument("--student-init", choices=("teacher-layers", "random"), default="teacher-layers")
    g.add_argument("--student-hidden-size", type=int, help="random init only (default: the teacher's)")
    g.add_argument("--student-intermediate-size", type=int, help="random init only")
    g.add_argument("--student-heads", type=int, help="random init only")
    _add_window_args(p)
    # general's sequence length is the window's --max-seq-len; its corpus is TRAIN_DATA
    _add_train_args(p, (GeneralConfig, PredictionConfig), exclude=frozenset({"corpus", "max_seq_len"}))
    _add_features_args(p)
    p.set_defaults(handler=_run_distill)


def _run_distill(args: argparse.Namespace) -> int:
    from distilqa.distill.config import STAGE_SETTINGS, StageJob
    from distilqa.distill.student import StudentSpec
    from distilqa.errors import ConfigError
    from distilqa.settings import from_namespace
    from distilqa.windows import WindowConfig

    if args.stage != "general" and not args.student:
        raise ConfigError(f"--stage {args.stage} needs --student (the model to train)")
    extra: dict[str, Any] = {}
    if args.stage == "general":
        extra["corpus"] = args.train_data
        extra["max_seq_len"] = args.max_seq_len
    settings = from_namespace(STAGE_SETTINGS[args.stage], args, **extra)
    spec = None
    if args.stage == "general":
        spec = StudentSpec(
            args.student_layers,
            args.student_init,
            args.student_hidden_size,
            args.student_intermediate_size,
            args.student_heads,
        )
    if args.stage == "teacher_logits" and not args.logits_cache:
        raise ConfigError("--stage teacher_logits needs --logits-cache (the directory S2b will read)")
    job = StageJob(
        args.stage,
        args.train_data,
        args.output,
        settings,
        # S1 packs plain text: --max-seq-len went into its settings, and no SQuAD windows are cut
        _window_config(args) if args.stage != "general" else WindowConfig(),
        teacher=args.teacher,
        student=args.student or "",
        student_spec=spec,
        logits_cache=args.logits_cache or "",
        features_cache=args.features_cache,
        features_num_proc=args.features_num_proc,
        checkpoint_dir=args.checkpoint_dir,
    )
    _launch_or_write(job, args)
    return 0


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="run one training stage from a job file, on 1 or N processes (the pipeline's training steps do this)",
        description="JOB.yaml holds a stage's every setting (stage, data, models, window, train, checkpoint_dir, "
        "tracking); every training step of the pipeline writes one and runs it so. The same file runs under "
        "`torchrun --nproc-per-node N -m distilqa.train JOB.yaml`. A job.yaml is saved beside every trained model "
        "and in every checkpoint.",
    )
    p.add_argument("job", metavar="JOB.yaml", help="the job file (local or s3://)")
    _add_launch_args(p)
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from distilqa.distill.config import StageJob

    job = StageJob.read(args.job)
    _launch_or_write(job, args)
    return 0


def _add_make_student(sub: Any) -> None:
    p = sub.add_parser(
        "make-student",
        help="build a student QA model from a teacher: every k-th layer, or a random smaller config",
        description="teacher-layers keeps the embeddings and teacher layers k, 2k, ..., L (k = L_teacher / "
        "L_student): the layers the uniform distillation map pairs with. random builds the teacher's config "
        "with the given shape. The tokenizer is the teacher's, as distillation requires.",
    )
    p.add_argument("teacher", help="teacher model (directory, s3:// prefix or hub id)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--init", choices=("teacher-layers", "random"), default="teacher-layers")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--intermediate-size", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(handler=_run_make_student)


def _run_make_student(args: argparse.Namespace) -> int:
    from distilqa.distill.student import StudentSpec

    spec = StudentSpec(args.layers, args.init, args.hidden_size, args.intermediate_size, args.heads)
    from distilqa.distill.student import build_student
    from distilqa.model_io import load_pretrained

    tokenizer, teacher = load_pretrained(args.teacher, "AutoModelForQuestionAnswering")
    student = build_student(teacher, spec, seed=args.seed)
    student.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    params = sum(p.numel() for p in student.parameters())
    print(
        f"make-student: {spec.layers} layers ({spec.init}), {params / 1e6:.1f}M parameters -> {args.output}",
        file=sys.stderr,
    )
    return 0


# ------------------------------------------------------------------------------------ pipeline


def _add_profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="smoke, cpu, production, or a profile YAML file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a profile value, e.g. --set prediction.lr=5e-5 (repeatable)",
    )


def _add_pipeline(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline on this machine (kfp.local) and write D/summary.json",
        description="ingest -> augment -> [finetune teachers] -> S1 -> S2a -> teacher logits -> S2b -> evaluate "
        "-> gate -> register (MLflow) -> deploy (local predictor, probe, champion). Tracking defaults to a SQLite "
        "file in the output directory unless MLFLOW_TRACKING_URI is set.",
    )
    _add_profile_args(p)
    p.add_argument("--output-dir", default="runs/latest", help="where artifacts and summary.json go")
    p.add_argument("--serve", action="store_true", help="afterwards, keep the champion served on loopback")
    p.add_argument("--port", type=int, default=8080, help="--serve: port (default 8080)")
    p.set_defaults(handler=_run_pipeline)
    root_help = (
        "where KFP stores this pipeline's artifacts (minio://, s3://, gs://); default: the cluster's "
        "kfp-launcher ConfigMap (manifests/kfp)"
    )
    c = sub.add_parser("compile", help="compile the pipeline of a profile to a KFP YAML package")
    _add_profile_args(c)
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--pipeline-root", default="", help=root_help)
    c.set_defaults(handler=_run_compile)
    s = sub.add_parser(
        "submit",
        help="upload the pipeline of a profile to Kubeflow Pipelines as a named version, then run or schedule it",
        description="Compiles the profile, uploads it as pipeline --pipeline-name (created if new) plus version "
        "--version-name, and starts a run in --experiment of --namespace, or a recurring run with --cron. "
        "Auth: --token-file, --session-cookie-file, or a bearer token in $KF_PIPELINES_TOKEN.",
    )
    _add_profile_args(s)
    s.add_argument("--host", required=True, help="KFP API URL, e.g. https://kubeflow.example.com/pipeline")
    s.add_argument("--namespace", default="", help="the Kubeflow profile namespace (multi-user installs)")
    s.add_argument("--experiment", default="distilqa")
    s.add_argument("--pipeline-name", default="", help="default: distilqa-<profile>")
    s.add_argument("--version-name", default="", help="default: <profile>-<git sha>-<UTC time>")
    s.add_argument("--run-name", default="")
    s.add_argument("--cron", default="", help="schedule a recurring run instead (5 or 6 cron fields, UTC)")
    s.add_argument("--pipeline-root", default="", help=root_help)
    s.add_argument("--token-file", default="", help="a file holding a bearer token (e.g. a ServiceAccount token)")
    s.add_argument(
        "--session-cookie-file", default="", help="a file holding the authservice_session cookie of a Kubeflow login"
    )
    s.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 if it failed")
    s.set_defaults(handler=_run_submit)
    for name, helptext in (
        ("promote", "make a registered version the champion"),
        ("rollback", "give the champion alias back to the previous champion"),
    ):
        r = sub.add_parser(name, help=helptext)
        r.add_argument("--model-name", default="tinyroberta-squad2")
        if name == "promote":
            r.add_argument("version")
        r.add_argument("--tracking-uri", default="", help="default: MLFLOW_TRACKING_URI")
        r.set_defaults(handler=_run_alias)


def _run_pipeline(args: argparse.Namespace) -> int:
    from distilqa.pipelines.profile import load_profile

    profile = load_profile(args.profile, args.overrides)
    from distilqa.pipelines.local_run import print_next_steps, run_local

    try:
        summary = run_local(profile, args.output_dir)
    except RuntimeError as exc:  # kfp.local: a step failed; its own log is above
        print(f"run: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    print_next_steps(summary, args.output_dir)
    if args.serve and summary["version"] and "champion" in summary["aliases"]:
        import subprocess
        from pathlib import Path

        log = Path(args.output_dir) / "serve.log"
        import os

        env = {**os.environ, "MLFLOW_TRACKING_URI": summary["tracking_uri"]}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distilqa.cli",
                "serve",
                f"models:/{summary['registered_model']}@champion",
                "--port",
                str(args.port),
                "--precision",
                profile.deploy.precision,
                "--name",
                summary["registered_model"],
            ],
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )  # noqa: SIM115
        (Path(args.output_dir) / "serve.pid").write_text(str(proc.pid))
        url = f"http://127.0.0.1:{args.port}"
        from distilqa.serving.process import wait_ready

        if not wait_ready(proc, url, timeout=120):
            print(f"distilqa run: the champion's server did not become ready; see {log}", file=sys.stderr)
            return 1
        print(
            f"serving the champion at {url} (log {log}; stop: kill $(cat {Path(args.output_dir) / 'serve.pid'}))\n"
            f"  ask it: .venv/bin/distilqa predict --url {url} --model-name {summary['registered_model']} "
            f"--question 'Which NFL team won Super Bowl 50?' --context 'The Denver Broncos defeated the "
            f"Carolina Panthers to win Super Bowl 50.'",
            file=sys.stderr,
        )
    return 0 if summary["gate"]["passed"] else 1


def _run_compile(args: argparse.Namespace) -> int:
    from distilqa.pipelines.profile import load_profile
    from distilqa.pipelines.submit import check_pipeline_root

    profile = load_profile(args.profile, args.overrides)
    root = check_pipeline_root(args.pipeline_root)
    from distilqa.pipelines.pipeline import compile_pipeline

    compile_pipeline(profile, args.output, root)
    print(f"compile: {profile.name} -> {args.output}", file=sys.stderr)
    return 0


def _run_submit(args: argparse.Namespace) -> int:
    from distilqa.pipelines.profile import load_profile
    from distilqa.pipelines.submit import Submission, check_pipeline_root, credentials, kfp_cron, submit

    profile = load_profile(args.profile, args.overrides)
    if args.wait and args.cron:
        raise ConfigError("--wait waits for one run; it cannot be combined with --cron")
    token, cookie = credentials(args.token_file, args.session_cookie_file)
    plan = Submission(
        host=args.host,
        namespace=args.namespace,
        experiment=args.experiment,
        pipeline_name=args.pipeline_name,
        version_name=args.version_name,
        run_name=args.run_name,
        cron=kfp_cron(args.cron) if args.cron else "",
        pipeline_root=check_pipeline_root(args.pipeline_root),
        token=token,
        session_cookie=cookie,
    )
    import tempfile

    from distilqa.pipelines.pipeline import compile_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        package = f"{tmp}/{profile.name}.yaml"
        compile_pipeline(profile, package)
        created = submit(package, profile.name, plan)
    print(json.dumps(created, indent=2))
    what = f"recurring run {created['recurring_run_id']} ({plan.cron})" if plan.cron else f"run {created['run_id']}"
    print(f"submit: {what} of version {created['version']} at {args.host}", file=sys.stderr)
    if args.wait:
        import kfp

        client = kfp.Client(
            host=args.host,
            namespace=args.namespace or "kubeflow",
            existing_token=token or None,
            cookies=f"authservice_session={cookie}" if cookie else None,
        )
        state = client.wait_for_run_completion(created["run_id"], timeout=7 * 24 * 3600).state
        print(f"submit: run {created['run_id']} finished: {state}", file=sys.stderr)
        return 0 if str(state).upper() == "SUCCEEDED" else 1
    return 0


def _run_alias(args: argparse.Namespace) -> int:
    from distilqa.registry import client, promote, rollback

    c = client(args.tracking_uri)
    if args.command == "promote":
        old = promote(c, args.model_name, args.version)
        print(f"promote: {args.model_name} champion {old or '(none)'} -> {args.version}", file=sys.stderr)
    else:
        now = rollback(c, args.model_name)
        print(f"rollback: {args.model_name} champion -> {now}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------- augment


def _add_augment(sub: Any) -> None:
    p = sub.add_parser(
        "augment",
        help="TinyBERT data augmentation of a SQuAD file (answers preserved)",
        description="Write the input plus N augmented copies of every paragraph: words outside answers, "
        "stop-words and non-alphabetic tokens are replaced with probability p by one of K candidates. "
        "Candidates: --mlm-model (masked LM; other words fall back to --glove or the MLM's embeddings), "
        "--glove (GloVe text file), or --embeddings-model (nearest tokens in a model's input embeddings).",
    )
    p.add_argument("input", help="SQuAD JSON (local, .gz, https:// or s3://)")
    p.add_argument("output", help="SQuAD JSON to write (.json or .json.gz; local or s3://)")
    p.add_argument("--factor", type=int, default=20, help="augmented copies per paragraph (default 20)")
    p.add_argument("--replace-prob", type=float, default=0.4, help="per-word replacement probability (default 0.4)")
    p.add_argument("--candidates", type=int, default=15, help="K candidates per word (default 15)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--shard", default="1/1", help="i/n: only the i-th of n shards (1-based); merge with augment-merge")
    p.add_argument("--mlm-model", help="masked-LM model directory")
    p.add_argument("--glove", help="GloVe vectors (text format, most frequent words first)")
    p.add_argument(
        "--glove-vocab", type=int, default=100_000, help="read only the first V GloVe words (default 100000)"
    )
    p.add_argument("--embeddings-model", help="model directory whose input embeddings give neighbours")
    p.add_argument(
        "--masks-per-copy",
        type=int,
        default=8,
        help="MLM: words masked together in one copy (default 8; 1 = one copy per word)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="MLM: masked copies per forward pass (default 64)")
    p.add_argument("--stats", help="stats JSON to write (default: next to OUTPUT, .stats.json)")
    p.set_defaults(handler=_run_augment)

    m = sub.add_parser("augment-merge", help="concatenate augment shards 1..n into one SQuAD file")
    m.add_argument("output")
    m.add_argument("shards", nargs="+", help="shard files in order 1..n")
    m.set_defaults(handler=_run_augment_merge)


def _run_augment(args: argparse.Namespace) -> int:
    from distilqa import storage
    from distilqa.augment.augment import AugmentConfig, Shard, augment_dataset
    from distilqa.errors import ConfigError
    from distilqa.squad import load_squad, write_squad

    config = AugmentConfig(args.factor, args.replace_prob, args.candidates, args.seed)
    shard = Shard.parse(args.shard)
    if not (args.mlm_model or args.glove or args.embeddings_model):
        raise ConfigError("name a candidate source: --mlm-model DIR, --glove FILE or --embeddings-model DIR")
    if args.embeddings_model and (args.mlm_model or args.glove):
        raise ConfigError("--embeddings-model is a source of its own: do not combine it with --mlm-model or --glove")
    dataset = load_squad(args.input)
    source = _candidate_source(args)
    result, stats = augment_dataset(dataset, config, source, shard, progress_bar("augment", "paragraph"))
    write_squad(result, args.output)
    stats_path = args.stats or _stats_path(args.output)
    report = {"input": args.input, "output": args.output, "source": source.name, "config": asdict(config)}
    storage.write_bytes(stats_path, json.dumps({**report, **stats.to_json()}, indent=2).encode())
    print(
        f"augment: shard {stats.shard}: {stats.paragraphs_in} paragraphs -> {stats.paragraphs_out}, "
        f"{stats.questions_out} questions, {sum(stats.replacements_by_source.values())} replacements "
        f"in {stats.seconds_total:.1f}s -> {args.output} (stats: {stats_path})",
        file=sys.stderr,
    )
    return 0


def _candidate_source(args: argparse.Namespace) -> Any:
    from distilqa.augment.sources import EmbeddingSource, GloveSource, MLMSource

    glove = GloveSource(args.glove, args.glove_vocab) if args.glove else None
    if args.mlm_model:
        return MLMSource(args.mlm_model, fallback=glove, masks_per_copy=args.masks_per_copy, batch_size=args.batch_size)
    if glove is not None:
        return glove
    return EmbeddingSource(args.embeddings_model)


def _stats_path(output: str) -> str:
    for suffix in (".json.gz", ".json", ".gz"):
        if output.endswith(suffix):
            return output[: -len(suffix)] + ".stats.json"
    return output + ".stats.json"


def _run_augment_merge(args: argparse.Namespace) -> int:
    from distilqa.augment.augment import merge_shards
    from distilqa.squad import load_squad, write_squad

    merged = merge_shards([load_squad(s) for s in args.shards])
    write_squad(merged, args.output)
    print(
        f"augment-merge: {len(args.shards)} shards, {merged.num_questions} questions -> {args.output}", file=sys.stderr
    )
    return 0


# --------------------------------------------------------------------------------------- bench


def _add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="speed benchmarks (figures for the docs)")
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH")
    bp = bench_sub.add_parser(
        "predict",
        help="questions/s of predict for RoBERTa-shaped models, and the time of eval",
        description="Questions/second of `distilqa predict` on the bundled dev set for randomly initialised "
        "RoBERTa models (768 wide, 12 heads) of the given depths, with and without length-sorted dynamic "
        "padding, and the time of `distilqa eval` on all dev questions.",
    )
    bp.add_argument("--layers", type=int, nargs="+", default=[6, 12], help="model depths (default 6 12)")
    bp.add_argument("--limit", type=int, default=400, help="dev questions per measurement (default 400)")
    bp.add_argument("--batch-size", type=int, default=32)
    bp.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    bp.add_argument("--work-dir", default=".bench", help="where the random models are built")
    bp.add_argument("--output", help="also write the results as JSON here")
    bp.add_argument("--precisions", nargs="+", default=["fp32"], choices=["auto", "fp32", "bf16", "int8"])
    bp.add_argument("--no-padding-comparison", action="store_true", help="skip the slow pad-to-max-seq-len run")
    bp.set_defaults(handler=_run_bench_predict)
    bt = bench_sub.add_parser(
        "train",
        help="samples/s and MFU of S2a (6L student, 12L teacher online) and S2b (cached logits) at seq 384",
        description="Times the stages' own loss functions + backward + AdamW on random RoBERTa models of the "
        "recipe's shapes (student 6 x 768, teacher 12 x 768), full 384-token windows. MFU = model FLOPs/s over "
        "the measured matmul peak of this machine (and the datasheet peak on a known GPU).",
    )
    bt.add_argument(
        "--stages",
        nargs="+",
        default=["s2a", "s2b", "logits"],
        choices=["s2a", "s2b", "logits"],
        help="logits: filling S2b's teacher-logit cache (12 x 768 teacher forward, features/s)",
    )
    bt.add_argument("--amp", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    bt.add_argument("--batch-size", type=int, default=8, help="per-device batch (default 8)")
    bt.add_argument("--seq-len", type=int, default=384)
    bt.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up (default 3)")
    bt.add_argument("--output", help="also write the results as JSON here")
    bt.set_defaults(handler=_run_bench_train)
    bc = bench_sub.add_parser(
        "cost",
        help="GPU-hours and cost of each stage of a profile on a node pool (FLOPs / measured MFU)",
        description="Counts each stage's model FLOPs for the profile (windows x epochs x forward/backward of the "
        "student and of every teacher run online) and converts them to node-hours at an MFU: measured on the "
        "pool's GPU by `distilqa bench train --output F` (--bench-json F), or given (--mfu).",
    )
    bc.add_argument("--profile", default="production")
    bc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bc.add_argument("--pool", default="p3.8xlarge", help="p3.8xlarge (4xV100, default), p4d.24xlarge, g6.12xlarge")
    bc.add_argument("--mfu", type=float, default=0.30, help="model FLOPs utilisation (default 0.30, an assumption)")
    bc.add_argument("--bench-json", help="take the MFU from `distilqa bench train --output` measured on the pool's GPU")
    bc.add_argument("--price", type=float, help="$ per node-hour (default: on-demand us-east-1 list price)")
    bc.add_argument(
        "--s1-sequences",
        type=int,
        help="384-token corpus sequences per S1 epoch (default: the profile's general.max_sequences, else "
        "1,000,000; the recipe's corpus size is unpublished)",
    )
    bc.add_argument("--output", help="also write the table as JSON here")
    bc.set_defaults(handler=_run_bench_cost)
    bs = bench_sub.add_parser(
        "serve",
        help="throughput and latency of distilqa serve under load, against transformers' pipeline",
        description="Closed-loop load (concurrency C, single-question V1 requests, dev questions) on a real "
        "`distilqa serve` process; optionally transformers' QuestionAnsweringPipeline from another Python "
        "(transformers 5.2, the last with the pipeline) on the same weights and questions, and a soak.",
    )
    bs.add_argument("--model", help="model directory (default: a random 6 x 768 RoBERTa built in --work-dir)")
    bs.add_argument("--questions", type=int, default=400)
    bs.add_argument("--concurrency", type=int, default=16)
    bs.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"])
    bs.add_argument("--pipeline-python", help="python of a venv with transformers 5.2 (see `make bench-serve`)")
    bs.add_argument("--soak-seconds", type=float, default=0.0, help="also soak at concurrency 16 (e.g. 120)")
    bs.add_argument("--work-dir", default=".bench")
    bs.add_argument("--output", help="also write the results as JSON here")
    bs.add_argument("--max-batch-size", type=int, default=None, help="passed to distilqa serve")
    bs.add_argument("--max-wait-ms", type=float, default=None, help="passed to distilqa serve")
    bs.add_argument("--windows-per-forward", type=int, default=None, help="passed to distilqa serve")
    bs.add_argument("--workers", type=int, default=None, help="passed to distilqa serve")
    bs.set_defaults(handler=_run_bench_serve)
    ba = bench_sub.add_parser(
        "augment",
        help="paragraphs/s of MLM augmentation against the straightforward baseline",
        description="Paragraphs/second, peak memory and candidate agreement of masked-LM augmentation: "
        "Haystack-style baseline vs distilqa (exact: one mask per copy; fast: 8 masks per copy), same MLM, "
        "same dev paragraphs.",
    )
    ba.add_argument("--paragraphs", type=int, default=200)
    ba.add_argument("--candidates", type=int, default=15)
    ba.add_argument(
        "--variants", nargs="+", default=["baseline", "exact", "fast"], choices=["baseline", "exact", "fast"]
    )
    ba.add_argument("--work-dir", default=".bench")
    ba.add_argument("--output", help="also write the results as JSON here")
    ba.set_defaults(handler=_run_bench_augment)
    bd = bench_sub.add_parser(
        "data",
        help="features/s and bytes per feature: the Arrow feature cache against in-memory tensors",
        description="Builds the training features of the bundled dev set repeated --repeat times three ways, "
        "each in its own process: in-memory padded tensors, an Arrow cache built by local rank 0 (--num-proc "
        "tokenizing processes), and the cache opened by another rank; reports features/s and private and peak "
        "bytes per feature. The stream path measures S1's corpus stream on the dev contexts repeated as often: "
        "tokens/s and one rank's memory.",
    )
    bd.add_argument("--repeat", type=int, default=20, help="copies of the dev set (default 20)")
    bd.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="tokenizing processes (default: cores)")
    bd.add_argument("--tokenizer", help="a tokenizer directory (default: a 50k BPE trained on the dev contexts)")
    bd.add_argument("--work-dir", default=".bench")
    bd.add_argument("--output", help="also write the results as JSON here")
    bd.add_argument(
        "--paths",
        default="memory,build,open,stream",
        help="which to measure, comma-separated (default all; open needs build): memory, build, open, stream",
    )
    bd.set_defaults(handler=_run_bench_data)
    p.set_defaults(handler=lambda a: _need_sub(p, a, "bench"))


def _need_sub(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> int:
    if getattr(args, name, None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return 0


def _run_bench_train(args: argparse.Namespace) -> int:
    from distilqa.errors import ConfigError

    if args.batch_size < 1 or args.steps < 1 or not 8 <= args.seq_len <= 512:
        raise ConfigError("--batch-size and --steps must be positive and --seq-len within [8, 512]")
    from distilqa.bench.train_speed import bench_stage, bench_teacher_logits

    results = []
    for stage in args.stages:
        for amp in args.amp:
            bench = bench_teacher_logits if stage == "logits" else functools.partial(bench_stage, stage)
            r = bench(args.batch_size, args.seq_len, args.steps, amp)
            results.append(r)
            unit = "features" if stage == "logits" else "samples"
            print(
                f"{stage} {amp}: {r['samples_per_s']} {unit}/s ({r['step_seconds']} s/step of {r['batch']}), "
                f"{r['model_tflops']} TFLOP/s, MFU {r['mfu_vs_measured_peak']:.1%} of the measured "
                f"{r['measured_matmul_peak_tflops']} TFLOP/s matmul peak",
                file=sys.stderr,
            )
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


def _run_bench_cost(args: argparse.Namespace) -> int:
    from distilqa.bench.cost import POOLS, estimate, mfu_from_bench, table
    from distilqa.errors import ConfigError
    from distilqa.pipelines.profile import load_profile

    if args.pool not in POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(POOLS)}, got {args.pool!r}")
    mfu, source = args.mfu, "assumed (--mfu)"
    if args.bench_json:
        gpu = POOLS[args.pool][0]
        measured = mfu_from_bench(args.bench_json, gpu)
        if measured is None:
            raise ConfigError(f"--bench-json {args.bench_json}: no {gpu} measurement with an MFU in it")
        mfu, source = measured, f"measured on {gpu} ({args.bench_json})"
    profile = load_profile(args.profile, args.overrides)
    s1_sequences = profile.general.max_sequences or 1_000_000 if args.s1_sequences is None else args.s1_sequences
    if not 0 < mfu <= 1 or s1_sequences < 0 or (args.price is not None and args.price < 0):
        raise ConfigError("--mfu must be within (0, 1], --s1-sequences and --price must be >= 0")
    rows = estimate(profile, args.pool, mfu, s1_sequences, args.price)
    gpu, gpus, tflops, price = POOLS[args.pool]
    print(
        f"profile {profile.name} on {args.pool} ({gpus} x {gpu}, {tflops:g} TFLOP/s each), MFU {mfu:.0%} {source}, "
        f"${args.price if args.price is not None else price:.2f}/node-hour\n"
    )
    print(table(rows))
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(
            json.dumps(
                {
                    "profile": profile.name,
                    "pool": args.pool,
                    "mfu": mfu,
                    "mfu_source": source,
                    "stages": [r.row() for r in rows],
                },
                indent=1,
            )
            + "\n"
        )
    return 0


def _run_bench_predict(args: argparse.Namespace) -> int:
    from distilqa.bench.predict_speed import run_predict_benchmark

    return run_predict_benchmark(
        layers=args.layers,
        limit=args.limit,
        batch_size=args.batch_size,
        threads=args.threads,
        work_dir=args.work_dir,
        output=args.output,
        precisions=args.precisions,
        padding_comparison=not args.no_padding_comparison,
    )


def _run_bench_serve(args: argparse.Namespace) -> int:
    from distilqa.bench.serve_speed import run_serve_benchmark

    return run_serve_benchmark(
        args.model,
        args.questions,
        args.concurrency,
        args.precision,
        args.pipeline_python,
        args.soak_seconds,
        args.work_dir,
        args.output,
        [
            f"--{flag.replace('_', '-')}={getattr(args, flag)}"
            for flag in ("max_batch_size", "max_wait_ms", "windows_per_forward", "workers")
            if getattr(args, flag) is not None
        ],
        workers=args.workers,
    )


def _run_bench_augment(args: argparse.Namespace) -> int:
    from distilqa.bench.augment_speed import run_augment_benchmark

    return run_augment_benchmark(args.paragraphs, args.candidates, args.work_dir, args.output, args.variants)


def _run_bench_data(args: argparse.Namespace) -> int:
    from distilqa.bench.data_speed import MODES, run_data_benchmark

    if args.repeat < 1 or args.num_proc < 1:
        raise ConfigError(f"--repeat and --num-proc must be >= 1, got {args.repeat} and {args.num_proc}")
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    unknown = sorted(set(paths) - set(MODES))
    if unknown or not paths:
        raise ConfigError(f"--paths takes {', '.join(MODES)}; got {args.paths!r}")
    if "open" in paths and "build" not in paths:
        raise ConfigError("--paths: open measures a cache that build makes; give build too")
    return run_data_benchmark(args.repeat, args.num_proc, args.tokenizer, args.work_dir, args.output, paths)


if __name__ == "__main__":
    sys.exit(main())
