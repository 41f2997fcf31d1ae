"""What every training stage shares: the record header and the train-then-save ending.

Each stage's output directory holds the model, its tokenizer and training_record.json (data
checksum, hyperparameters, code version, timings). Under DDP only rank 0 writes, and every rank
waits for it before the process group is torn down.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from distilqa.distill.provenance import code_version, data_checksum
from distilqa.distill.trainer import TrainConfig, Trainer, write_record
from distilqa.windows import WindowConfig


def stage_record(
    stage: str, train_data: str, window: WindowConfig | None, config: TrainConfig, **fields: Any
) -> dict[str, Any]:
    checksum = fields.pop("train_data_checksum", None) or data_checksum(train_data)
    return {
        "stage": stage,
        **fields,
        "train_data": train_data,
        "train_data_checksum": checksum,
        "window": asdict(window) if window else None,
        "train": asdict(config),
        "code_version": code_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def train_and_save(
    trainer: Trainer, model: Any, tokenizer: Any, output_dir: str, record: dict[str, Any]
) -> dict[str, Any]:
    record["result"] = trainer.train()
    if trainer.dist.is_main:
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        write_record(output_dir, record)
    if trainer.dist.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return record
