"""Stage 2a: task-specific intermediate distillation (TinyBERT), the teacher run online.

The student learns the teacher's hidden states (embeddings included) and attention maps through
the uniform layer map; the QA head is not trained here (its logits are not in the loss). The
attention target is the paper's pre-softmax scores by default, or the probabilities Haystack used
(`attention_target="probabilities"`), or nothing (teachers with another head count).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from distilqa.distill.attention_scores import return_attention_probabilities, return_attention_scores
from distilqa.distill.config import AttentionTarget, IntermediateConfig, StageJob
from distilqa.distill.finetune import stage_features, trim_padding
from distilqa.distill.losses import IntermediateDistiller, LayerMap, check_same_tokenizer
from distilqa.distill.stage import stage_record, train_and_save
from distilqa.distill.trainer import Trainer
from distilqa.errors import ConfigError
from distilqa.model_io import load_pretrained
from distilqa.squad import load_squad

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def intermediate_loss_fn(teacher: nn.Module, attention: bool):
    """Loss over one micro-batch; shared by S1 (plain text) and S2a (SQuAD features)."""

    def loss(model: nn.Module, batch: dict[str, Tensor], distiller: nn.Module) -> dict[str, Tensor]:
        batch = trim_padding(batch)
        inputs = {k: batch[k] for k in INPUTS if k in batch}
        device = inputs["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=True, output_attentions=attention)
        s = model(**inputs, output_hidden_states=True, output_attentions=attention)
        terms = distiller(
            s.hidden_states,
            t.hidden_states,
            s.attentions if attention else None,
            t.attentions if attention else None,
            inputs["attention_mask"],
        )
        out = {"loss": terms["total"], "hidden": terms["hidden"].detach()}
        if "attention" in terms:
            out["attention"] = terms["attention"].detach()
        return out

    return loss


def prepare_pair(
    student: Any,
    teacher: Any,
    student_tok: Any,
    teacher_tok: Any,
    attention_target: AttentionTarget,
    mask_hidden_padding: bool,
) -> tuple[IntermediateDistiller, dict[str, Any]]:
    """Checks, attention capture and the distiller (with its projections) for a teacher/student pair."""
    if attention_target not in ("scores", "probabilities", "none"):
        raise ConfigError(f"attention target must be scores, probabilities or none, got {attention_target!r}")
    check_same_tokenizer(student_tok, teacher_tok)
    sc, tc = student.config, teacher.config
    attention = attention_target != "none"
    if attention and sc.num_attention_heads != tc.num_attention_heads:
        raise ConfigError(
            f"attention loss needs equal head counts (student {sc.num_attention_heads}, teacher "
            f"{tc.num_attention_heads}); use --attention-target none or a teacher with the student's head count"
        )
    for model in (student, teacher):
        if attention_target == "scores":
            return_attention_scores(model)
        elif attention_target == "probabilities":
            return_attention_probabilities(model)
    layer_map = LayerMap(sc.num_hidden_layers, tc.num_hidden_layers)
    distiller = IntermediateDistiller(layer_map, sc.hidden_size, tc.hidden_size, attention, mask_hidden_padding)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    facts = {
        "layer_map": {m: layer_map.teacher_layer(m) for m in range(layer_map.student_layers + 1)},
        "attention_target": attention_target,
        "hidden_padding_masked": mask_hidden_padding,
        "projections": sc.hidden_size != tc.hidden_size,
    }
    return distiller, facts


def distill_intermediate(job: StageJob) -> dict[str, Any]:
    settings: IntermediateConfig = job.train  # type: ignore[assignment]
    student_tok, student = load_pretrained(job.student, "AutoModelForQuestionAnswering")
    teacher_tok, teacher = load_pretrained(job.teacher, "AutoModelForQuestionAnswering")
    distiller, facts = prepare_pair(
        student, teacher, student_tok, teacher_tok, settings.attention_target, not settings.hidden_padding
    )
    dataset = load_squad(job.train_data)
    data = stage_features(job, dataset, student_tok)  # one tokenization per data version, shared by the ranks
    record = stage_record(job, teacher=job.teacher, student=job.student, **facts)
    # the QA heads are not in this loss: both models run their encoders only, and the student's head
    # stays as it is (DDP must not wrap parameters that get no gradient)
    loss = intermediate_loss_fn(teacher.base_model, settings.attention_target != "none")
    backbone = student.base_model
    trainer = Trainer(
        backbone, data, loss, settings, job.output_dir, extra_modules=distiller, record=record, job=job.to_dict()
    )
    return train_and_save(trainer, student, student_tok, job, record)
