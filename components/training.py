"""The training steps: finetune_teacher, general (S1), teacher_logits, intermediate (S2a), prediction (S2b).

Each runs the library stage inside a nested MLflow run. Teachers and the student backbone are passed
as artifact URIs (strings: a local path under kfp.local, s3:// under a cluster's S3 pipeline root),
because each may come from either branch of a dsl.If/Else (dsl.OneOf of parameters). On a GPU node the step re-executes itself
under `torchrun --standalone --nproc_per_node <GPUs>` (DDP); checkpoints go to the output artifact,
so a retried pod resumes from the last one.
"""

import os
import sys
from typing import Any

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def _under_torchrun(stage: str, argv: list[str]) -> bool:
    """Re-run `python -m distilqa.cli ...` under torchrun when this pod has several GPUs."""
    import subprocess

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2 or os.environ.get("LOCAL_RANK") is not None:
        return False
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", "distilqa.cli", *argv]  # fmt: skip
    print(f"{stage}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    return True


def _train_args(params: Any) -> list[str]:
    return ["--epochs", str(params.epochs), "--lr", str(params.lr), "--batch-size", str(params.batch_size),
            "--per-device-batch-size", str(params.per_device_batch_size), "--warmup-ratio", str(params.warmup_ratio),
            "--weight-decay", str(params.weight_decay), "--max-grad-norm", str(params.max_grad_norm),
            "--seed", str(params.seed), "--amp", params.amp, "--checkpoint-every", str(params.checkpoint_every),
            *(["--group-by-length"] if params.group_by_length else [])]  # fmt: skip


def _window_args(w: Any) -> list[str]:
    return ["--max-seq-len", str(w.max_seq_len), "--doc-stride", str(w.doc_stride), "--stride-mode", w.stride_mode,
            "--max-query-length", str(w.max_query_length)]  # fmt: skip


def run_finetune_teacher(model: str, train_path: str, window: dict, params: dict, out_dir: str, tracking: dict) -> dict:
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.finetune import finetune
    from distilqa.tracking import stage_run

    w, p = build_section("window", window), build_section("teacher_finetune", params)
    with stage_run(tracking.get("uri", ""), tracking.get("parent_run_id", ""), "finetune_teacher", params):
        argv = ["finetune", model, train_path, "-o", out_dir, *_window_args(w), *_train_args(p)]
        if not _under_torchrun("finetune_teacher", argv):
            finetune(model, train_path, out_dir, p.train_config(), w.window_config())
    return _record(out_dir)


def run_general(teacher: str, models: dict, general: dict, out_dir: str, tracking: dict) -> dict:
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.general import distill_general
    from distilqa.distill.student import StudentSpec

    m, g = build_section("models", models), build_section("general", general)
    corpus = _corpus(g.corpus, out_dir)
    spec = StudentSpec(m.student_layers, m.student_init)  # type: ignore[arg-type]
    from distilqa.tracking import stage_run

    with stage_run(tracking.get("uri", ""), tracking.get("parent_run_id", ""), "general", general):
        argv = ["distill", "--stage", "general", "--teacher", teacher, corpus, "-o", out_dir, "--student-layers",
                str(m.student_layers), "--student-init", m.student_init, "--max-seq-len", str(g.max_seq_len),
                "--attention-target", g.attention_target, *_train_args(g),
                *(["--max-sequences", str(g.max_sequences)] if g.max_sequences else [])]  # fmt: skip
        if not _under_torchrun("general", argv):
            distill_general(teacher, corpus, out_dir, g.train_config(), spec, g.max_seq_len, g.attention_target,  # type: ignore[arg-type]
                            max_sequences=g.max_sequences or None)  # fmt: skip
    return _record(out_dir)


def _corpus(corpus: str, out_dir: str) -> str:
    """builtin:dev-contexts: the shipped dev set's paragraphs as a corpus (smoke runs)."""
    if corpus != "builtin:dev-contexts":
        return corpus
    from pathlib import Path

    from distilqa.squad import load_squad

    path = Path(out_dir).parent / (Path(out_dir).name + "-corpus.txt")
    contexts = dict.fromkeys(p.context.replace("\n", " ") for _, p, _ in load_squad().iter_questions())
    path.write_text("\n".join(contexts) + "\n")
    return str(path)


def run_teacher_logits(teacher_dir: str, student_dir: str, train_path: str, window: dict, out_dir: str) -> dict:
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.prediction import precompute_teacher_logits

    return precompute_teacher_logits(teacher_dir, student_dir, train_path, build_section("window", window).window_config(),
                                     out_dir)  # fmt: skip


def run_intermediate(teacher_dir: str, student_dir: str, train_path: str, window: dict, params: dict, out_dir: str,
                     tracking: dict) -> dict:  # fmt: skip
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.intermediate import distill_intermediate
    from distilqa.tracking import stage_run

    w, p = build_section("window", window), build_section("intermediate", params)
    with stage_run(tracking.get("uri", ""), tracking.get("parent_run_id", ""), "intermediate", params):
        argv = ["distill", "--stage", "intermediate", "--teacher", teacher_dir, "--student", student_dir, train_path,
                "-o", out_dir, "--attention-target", p.attention_target, *_window_args(w), *_train_args(p)]  # fmt: skip
        if not _under_torchrun("intermediate", argv):
            distill_intermediate(teacher_dir, student_dir, train_path, out_dir, p.train_config(), w.window_config(),
                                 attention_target=p.attention_target)  # type: ignore[arg-type]  # fmt: skip
    return _record(out_dir)


def run_prediction(teacher_dir: str, student_dir: str, train_path: str, logits_dir: str, window: dict, params: dict,
                   out_dir: str, tracking: dict) -> dict:  # fmt: skip
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.prediction import distill_prediction
    from distilqa.tracking import stage_run

    w, p = build_section("window", window), build_section("prediction", params)
    with stage_run(tracking.get("uri", ""), tracking.get("parent_run_id", ""), "prediction", params):
        argv = ["distill", "--stage", "prediction", "--teacher", teacher_dir, "--student", student_dir, train_path,
                "-o", out_dir, "--logits-cache", logits_dir, "--temperature", str(p.temperature),
                "--distillation-weight", str(p.distillation_weight), *_window_args(w), *_train_args(p)]  # fmt: skip
        if not _under_torchrun("prediction", argv):
            distill_prediction(teacher_dir, student_dir, train_path, out_dir, p.train_config(), w.window_config(),
                               p.temperature, p.distillation_weight, logits_dir)  # fmt: skip
    return _record(out_dir)


def _record(out_dir: str) -> dict:
    import json
    from pathlib import Path

    record = json.loads((Path(out_dir) / "training_record.json").read_text())
    result = record.get("result", {})  # wall_seconds_total: a retried step's time over every attempt
    return {"stage": record.get("stage", ""), "steps": result.get("steps", 0),
            "samples_per_s": result.get("samples_per_s") or 0.0, "wall_seconds": result.get("wall_seconds_total") or result.get("wall_seconds") or 0.0,
            "train_data_checksum": record.get("train_data_checksum", "")}  # fmt: skip


def _annotate(artifact: Any, summary: dict) -> None:
    artifact.metadata.update({k: v for k, v in summary.items() if isinstance(v, int | float | str)})


@component(base_image=BASE_IMAGE)
def finetune_teacher_op(model: str, train: dsl.Input[dsl.Dataset], window: dict, params: dict, tracking: dict,
                        out: dsl.Output[dsl.Model]) -> str:  # fmt: skip
    from distilqa.components.training import _annotate, run_finetune_teacher

    _annotate(out, run_finetune_teacher(model, train.path, window, params, out.path, tracking))
    return out.uri


@component(base_image=BASE_IMAGE)
def general_op(teacher: str, models: dict, general: dict, tracking: dict, out: dsl.Output[dsl.Model]) -> str:
    from distilqa.components.training import _annotate, run_general

    _annotate(out, run_general(teacher, models, general, out.path, tracking))
    return out.uri


@component(base_image=BASE_IMAGE)
def teacher_logits_op(teacher: str, student: str, train: dsl.Input[dsl.Dataset], window: dict,
                      out: dsl.Output[dsl.Artifact]):  # fmt: skip
    from distilqa.components.training import _annotate, run_teacher_logits

    _annotate(out, run_teacher_logits(teacher, student, train.path, window, out.path))


@component(base_image=BASE_IMAGE)
def intermediate_op(teacher: str, student: str, train: dsl.Input[dsl.Dataset], window: dict, params: dict,
                    tracking: dict, out: dsl.Output[dsl.Model]):  # fmt: skip
    from distilqa.components.training import _annotate, run_intermediate

    _annotate(out, run_intermediate(teacher, student, train.path, window, params, out.path, tracking))


@component(base_image=BASE_IMAGE)
def prediction_op(teacher: str, student: dsl.Input[dsl.Model], train: dsl.Input[dsl.Dataset],
                  logits: dsl.Input[dsl.Artifact], window: dict, params: dict, tracking: dict,
                  out: dsl.Output[dsl.Model]):  # fmt: skip
    from distilqa.components.training import _annotate, run_prediction

    _annotate(out, run_prediction(teacher, student.path, train.path, logits.path, window, params, out.path,
                                  tracking))  # fmt: skip
