"""What every training stage shares: the record header and the train-then-save ending.

Each stage's output directory holds the model, its tokenizer, job.yaml (the resolved settings it
was trained with) and training_record.json (data checksum, hyperparameters, code version,
timings). Under DDP only rank 0 writes, and every rank waits for it before the process group is
torn down.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from distilqa.distill import distributed
from distilqa.distill.config import StageJob
from distilqa.distill.provenance import code_version, data_checksum
from distilqa.distill.trainer import Trainer, write_record


def stage_record(job: StageJob, **fields: Any) -> dict[str, Any]:
    checksum = fields.pop("train_data_checksum", None) or data_checksum(job.train_data)
    return {
        "stage": job.stage,
        **fields,
        "train_data": job.train_data,
        "train_data_checksum": checksum,
        "window": asdict(job.window) if job.stage != "general" else None,
        "train": asdict(job.train),
        "code_version": code_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def train_and_save(
    trainer: Trainer, model: Any, tokenizer: Any, job: StageJob, record: dict[str, Any]
) -> dict[str, Any]:
    record["result"] = trainer.train()
    if trainer.dist.is_main:
        model.save_pretrained(job.output_dir)
        tokenizer.save_pretrained(job.output_dir)
        job.write(f"{job.output_dir}/job.yaml")
        write_record(job.output_dir, record)
    distributed.tear_down(trainer.dist)
    return record
