"""Stage 2b: prediction-layer distillation from a (large) teacher's cached logits."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distilqa.distill.config import PredictionConfig, StageJob
from distilqa.distill.finetune import stage_features, trim_padding
from distilqa.distill.losses import check_same_tokenizer, prediction_layer_loss
from distilqa.distill.stage import stage_record, train_and_save
from distilqa.distill.teacher_logits import cached_teacher_logits, teacher_fingerprint
from distilqa.distill.trainer import Trainer
from distilqa.model_io import load_pretrained
from distilqa.squad import load_squad


def prediction_loss_fn(temperature: float, weight: float):
    def loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        batch = trim_padding(batch)
        length = batch["input_ids"].shape[1]
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        out = model(**inputs)
        teacher = batch["teacher_logits"][:, :length]
        value = prediction_layer_loss(
            student_start_logits=out.start_logits,
            student_end_logits=out.end_logits,
            teacher_start_logits=teacher[..., 0],
            teacher_end_logits=teacher[..., 1],
            start_positions=batch["start_positions"],
            end_positions=batch["end_positions"],
            temperature=temperature,
            weight=weight,
            attention_mask=batch["attention_mask"],
        )
        return {"loss": value}

    return loss


class WithTeacherLogits:
    """The student's features joined with the teacher's logits on the same feature index."""

    def __init__(self, features: Any, logits: np.ndarray) -> None:
        self.features, self.logits, self.width = features, logits, features.width

    def __len__(self) -> int:
        return len(self.features)

    def lengths(self) -> Any:
        return self.features.lengths()

    def fingerprint(self) -> str:
        return self.features.fingerprint()

    def batch(self, indices: Tensor) -> dict[str, Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        return {**self.features.batch(indices), "teacher_logits": torch.from_numpy(self.logits[rows])}


def _student_data_and_teacher_logits(job: StageJob, student_tok: Any) -> tuple[WithTeacherLogits, str, bool]:
    """The student's features with the teacher's logits on the same ids (computed once, then cached)."""
    settings: PredictionConfig = job.train  # type: ignore[assignment]
    teacher_tok, teacher = load_pretrained(job.teacher, "AutoModelForQuestionAnswering")
    check_same_tokenizer(student_tok, teacher_tok)
    features = stage_features(job, load_squad(job.train_data), student_tok)  # the student's ids, for both
    fingerprint = teacher_fingerprint(getattr(teacher, "name_or_path", job.teacher))
    logits, cached = cached_teacher_logits(
        teacher,
        fingerprint,
        features,
        asdict(job.window),
        batch_size=settings.logits_batch_size,
        directory=job.logits_cache or None,
        precision=settings.teacher_precision,
    )
    del teacher
    return WithTeacherLogits(features, logits), fingerprint, cached  # logits memory-mapped, read per batch


RECORD = "teacher_logits_record.json"


def precompute_teacher_logits(job: StageJob) -> dict[str, Any]:
    """Fill the cache S2b reads (its own pipeline step, so a retried S2b never recomputes it).

    Every rank fills its share; the summary lands in the cache directory as teacher_logits_record.json.
    """
    import json
    from pathlib import Path

    from distilqa.distill import distributed

    student_tok, _ = load_pretrained(job.student, "AutoModelForQuestionAnswering")
    data, fingerprint, cached = _student_data_and_teacher_logits(job, student_tok)
    summary = {
        "features": len(data),
        "cached": cached,
        "teacher_checksum": fingerprint,
        "teacher_precision": job.train.teacher_precision,  # type: ignore[attr-defined]
    }
    d = distributed.current()
    if d.is_main and job.logits_cache:
        Path(job.logits_cache, RECORD).write_text(json.dumps(summary, indent=2))
    distributed.tear_down(d)
    return summary


def distill_prediction(job: StageJob) -> dict[str, Any]:
    settings: PredictionConfig = job.train  # type: ignore[assignment]
    student_tok, student = load_pretrained(job.student, "AutoModelForQuestionAnswering")
    data, fingerprint, cached = _student_data_and_teacher_logits(job, student_tok)
    record = stage_record(
        job,
        teacher=job.teacher,
        teacher_checksum=fingerprint,
        student=job.student,
        teacher_logits="cached" if cached else "computed",
        temperature=settings.temperature,
        distillation_weight=settings.distillation_weight,
    )
    loss = prediction_loss_fn(settings.temperature, settings.distillation_weight)
    trainer = Trainer(student, data, loss, settings, job.output_dir, record=record, job=job.to_dict())
    return train_and_save(trainer, student, student_tok, job, record)
