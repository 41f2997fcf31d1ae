"""Stage 2b: prediction-layer distillation from a (large) teacher's cached logits."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from distilqa.distill.finetune import qa_tensors, trim_padding
from distilqa.distill.losses import check_same_tokenizer, prediction_layer_loss
from distilqa.distill.stage import stage_record, train_and_save
from distilqa.distill.teacher_logits import cached_teacher_logits, teacher_fingerprint
from distilqa.distill.trainer import TrainConfig, Trainer
from distilqa.errors import ConfigError
from distilqa.model_io import load_pretrained
from distilqa.squad import load_squad
from distilqa.windows import WindowConfig


def prediction_loss_fn(temperature: float, weight: float):
    def loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        batch = trim_padding(batch)
        length = batch["input_ids"].shape[1]
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        out = model(**inputs)
        teacher = batch["teacher_logits"][:, :length]
        value = prediction_layer_loss(
            student_start_logits=out.start_logits, student_end_logits=out.end_logits,
            teacher_start_logits=teacher[..., 0], teacher_end_logits=teacher[..., 1],
            start_positions=batch["start_positions"], end_positions=batch["end_positions"],
            temperature=temperature, weight=weight, attention_mask=batch["attention_mask"],
        )  # fmt: skip
        return {"loss": value}

    return loss


def _student_data_and_teacher_logits(
    teacher_location: str, student_tok: Any, train_data: str, window: WindowConfig, logits_cache: str | None
) -> tuple[dict[str, Tensor], str, bool]:
    """The student's features with the teacher's logits on the same ids (computed once, then cached)."""
    teacher_tok, teacher = load_pretrained(teacher_location, "AutoModelForQuestionAnswering")
    check_same_tokenizer(student_tok, teacher_tok)
    data = qa_tensors(load_squad(train_data), student_tok, window)  # the student's token ids, for both models
    fingerprint = teacher_fingerprint(getattr(teacher, "name_or_path", teacher_location))
    logits, cached = cached_teacher_logits(teacher, fingerprint, data, asdict(window), directory=logits_cache)
    data["teacher_logits"] = torch.from_numpy(logits)  # memory-mapped: indexed per batch, never loaded whole
    return data, fingerprint, cached


def precompute_teacher_logits(
    teacher_location: str, student_location: str, train_data: str, window: WindowConfig, logits_cache: str
) -> dict[str, Any]:
    """Fill the cache S2b reads (its own pipeline step, so a retried S2b never recomputes it)."""
    student_tok, _ = load_pretrained(student_location, "AutoModelForQuestionAnswering")
    data, fingerprint, cached = _student_data_and_teacher_logits(
        teacher_location, student_tok, train_data, window, logits_cache
    )
    return {"features": len(data["teacher_logits"]), "cached": cached, "teacher_checksum": fingerprint}


def distill_prediction(
    teacher_location: str,
    student_location: str,
    train_data: str,
    output_dir: str,
    config: TrainConfig,
    window: WindowConfig,
    temperature: float = 1.5,
    weight: float = 0.75,
    logits_cache: str | None = None,
) -> dict[str, Any]:
    if temperature <= 0 or not 0.0 <= weight <= 1.0:
        raise ConfigError(f"temperature must be > 0 and weight within [0, 1], got {temperature} and {weight}")
    student_tok, student = load_pretrained(student_location, "AutoModelForQuestionAnswering")
    data, fingerprint, cached = _student_data_and_teacher_logits(
        teacher_location, student_tok, train_data, window, logits_cache
    )
    record = stage_record(
        "prediction",
        train_data,
        window,
        config,
        teacher=teacher_location,
        teacher_checksum=fingerprint,
        student=student_location,
        teacher_logits="cached" if cached else "computed",
        temperature=temperature,
        distillation_weight=weight,
    )
    trainer = Trainer(student, data, prediction_loss_fn(temperature, weight), config, output_dir, record=record)
    return train_and_save(trainer, student, student_tok, output_dir, record)
