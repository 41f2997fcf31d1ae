"""Stage 2a: task-specific intermediate distillation (TinyBERT), the teacher run online.

The student learns the teacher's hidden states (embeddings included) and attention maps through
the uniform layer map; the QA head is not trained here (its logits are not in the loss). The
attention target is the attention probabilities transformers returns (Haystack's choice); the
paper's pre-softmax scores need the scores captured inside the attention layers, which is not
implemented yet.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from distilqa.distill.finetune import qa_tensors, trim_padding
from distilqa.distill.losses import IntermediateDistiller, LayerMap, check_same_tokenizer
from distilqa.distill.stage import stage_record, train_and_save
from distilqa.distill.trainer import TrainConfig, Trainer
from distilqa.errors import ConfigError
from distilqa.model_io import load_pretrained
from distilqa.squad import load_squad
from distilqa.windows import WindowConfig

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def intermediate_loss_fn(teacher: nn.Module):
    def loss(model: nn.Module, batch: dict[str, Tensor], distiller: nn.Module) -> dict[str, Tensor]:
        batch = trim_padding(batch)
        inputs = {k: batch[k] for k in INPUTS if k in batch}
        device = inputs["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s = model(**inputs, output_hidden_states=True, output_attentions=True)
        terms = distiller(s.hidden_states, t.hidden_states, s.attentions, t.attentions, inputs["attention_mask"])
        out = {"loss": terms["total"], "hidden": terms["hidden"].detach()}
        if "attention" in terms:
            out["attention"] = terms["attention"].detach()
        return out

    return loss


def distill_intermediate(
    teacher_location: str,
    student_location: str,
    train_data: str,
    output_dir: str,
    config: TrainConfig,
    window: WindowConfig,
    attention: bool = True,
    mask_hidden_padding: bool = True,
) -> dict[str, Any]:
    eager = {"attn_implementation": "eager"}  # attentions are only returned by eager attention
    student_tok, student = load_pretrained(student_location, "AutoModelForQuestionAnswering", **eager)
    teacher_tok, teacher = load_pretrained(teacher_location, "AutoModelForQuestionAnswering", **eager)
    check_same_tokenizer(student_tok, teacher_tok)
    sc, tc = student.config, teacher.config
    if attention and sc.num_attention_heads != tc.num_attention_heads:
        raise ConfigError(
            f"attention loss needs equal head counts (student {sc.num_attention_heads}, teacher "
            f"{tc.num_attention_heads}); use --no-attention or a teacher with the student's head count"
        )
    layer_map = LayerMap(sc.num_hidden_layers, tc.num_hidden_layers)
    distiller = IntermediateDistiller(layer_map, sc.hidden_size, tc.hidden_size, attention, mask_hidden_padding)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    dataset = load_squad(train_data)
    data = qa_tensors(dataset, student_tok, window)
    record = stage_record(
        "intermediate",
        train_data,
        window,
        config,
        teacher=teacher_location,
        student=student_location,
        layer_map={m: layer_map.teacher_layer(m) for m in range(layer_map.student_layers + 1)},
        attention_loss="probabilities" if attention else None,
        projections=sc.hidden_size != tc.hidden_size,
    )
    trainer = Trainer(
        student, data, intermediate_loss_fn(teacher), config, output_dir, extra_modules=distiller, record=record
    )
    return train_and_save(trainer, student, student_tok, output_dir, record)
