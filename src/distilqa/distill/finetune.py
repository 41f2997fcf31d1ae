"""Standard extractive-QA fine-tuning: teachers that are only base LMs, and the no-distillation baseline.

Labels come from the shared windowing (first gold answer; CLS for unanswerable questions and for
windows that do not hold the whole answer), so training sees exactly the features inference sees.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilqa.distill.config import StageJob
from distilqa.distill.stage import stage_record, train_and_save
from distilqa.distill.trainer import Trainer
from distilqa.model_io import load_pretrained
from distilqa.squad import SquadDataset, load_squad
from distilqa.windows import WindowConfig, Windower


def qa_tensors(dataset: SquadDataset, tokenizer: Any, window: WindowConfig) -> dict[str, Tensor]:
    """Padded features with start/end labels, as tensors the trainer can index."""
    items = [(qa, p.context) for _, p, qa in dataset.iter_questions()]
    answers = [(qa.answers[0].answer_start, qa.answers[0].answer_end) if qa.answers else None for qa, _ in items]
    windower = Windower(tokenizer, window)
    features = windower.features([qa.question for qa, _ in items], [c for _, c in items], answers)
    n, width = len(features), window.max_seq_len
    out = {
        "input_ids": torch.full((n, width), windower.template.pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((n, width), dtype=torch.long),
        "start_positions": torch.tensor([f.start_position for f in features], dtype=torch.long),
        "end_positions": torch.tensor([f.end_position for f in features], dtype=torch.long),
    }
    if windower.template.uses_token_types:
        out["token_type_ids"] = torch.zeros((n, width), dtype=torch.long)
    for i, f in enumerate(features):
        out["input_ids"][i, : len(f.input_ids)] = torch.tensor(f.input_ids)
        out["attention_mask"][i, : len(f.input_ids)] = 1
        if f.token_type_ids is not None:
            out["token_type_ids"][i, : len(f.input_ids)] = torch.tensor(f.token_type_ids)
    return out


def trim_padding(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cut a micro-batch to its longest real sequence (dynamic padding for fixed-size tensors)."""
    length = int(batch["attention_mask"].sum(dim=1).max())
    return {k: (v[:, :length] if v.ndim == 2 else v) for k, v in batch.items()}


def span_cross_entropy(logits: Tensor, positions: Tensor, attention_mask: Tensor) -> Tensor:
    """CE over the real tokens only. transformers' QA loss also spreads probability over padding,
    which makes the loss depend on how much padding a micro-batch happens to carry."""
    masked = logits.float().masked_fill(attention_mask == 0, -1e4)
    return F.cross_entropy(masked, positions)


def qa_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    batch = trim_padding(batch)
    inputs = {k: v for k, v in batch.items() if k not in ("start_positions", "end_positions")}
    out = model(**inputs)
    mask = batch["attention_mask"]
    start = span_cross_entropy(out.start_logits, batch["start_positions"], mask)
    end = span_cross_entropy(out.end_logits, batch["end_positions"], mask)
    return {"loss": (start + end) / 2, "ce_start": start.detach(), "ce_end": end.detach()}


def stage_features(job: StageJob, dataset: SquadDataset, tokenizer: Any) -> Any:
    """The stage's training features: tokenized once per data version into the job's feature cache,
    memory-mapped by every rank of the node (distilqa.features)."""
    from distilqa.features import shared_features
    from distilqa.storage import cache_dir

    cache = job.features_cache or str(cache_dir() / "features")
    return shared_features(dataset, tokenizer, job.window, cache, job.features_num_proc)


def finetune(job: StageJob) -> dict[str, Any]:
    tokenizer, model = load_pretrained(job.model, "AutoModelForQuestionAnswering")
    dataset = load_squad(job.train_data)
    data = stage_features(job, dataset, tokenizer)
    record = stage_record(job, model=job.model, questions=dataset.num_questions, features=len(data))
    trainer = Trainer(model, data, qa_loss, job.train, job.output_dir, record=record, job=job.to_dict())
    return train_and_save(trainer, model, tokenizer, job, record)
