"""Stage 1: general distillation on plain text (TinyBERT's intermediate loss, no logits).

The teacher is a base LM (roberta-base in the recipe); the student is built from it
(`StudentSpec`: every k-th teacher layer, or a random init of a smaller config). The corpus is
streamed (`distilqa.corpus`): .txt / .txt.gz / .jsonl / .jsonl.zst shards, local or s3://, read as
they are consumed, packed on the fly into full-length sequences ([CLS] tokens… [SEP], documents
joined by [SEP]) so no compute is spent on padding, and split across ranks. Memory does not grow
with the corpus, and a killed run resumes at the token where its last checkpoint was taken.
"""

from __future__ import annotations

from typing import Any

from distilqa.corpus import CorpusStream, corpus_fingerprint, corpus_shards
from distilqa.distill.config import GeneralConfig, StageJob
from distilqa.distill.distributed import init_distributed
from distilqa.distill.intermediate import intermediate_loss_fn, prepare_pair
from distilqa.distill.stage import stage_record, train_and_save
from distilqa.distill.student import build_student
from distilqa.distill.trainer import Trainer
from distilqa.model_io import load_pretrained


def distill_general(job: StageJob) -> dict[str, Any]:
    settings: GeneralConfig = job.train  # type: ignore[assignment]
    shards = corpus_shards(job.train_data)  # a wrong corpus location fails before any model is loaded
    tokenizer, teacher = load_pretrained(job.teacher, "AutoModel")
    teacher.pooler = None  # not in the loss: computing it would only leave DDP waiting for its gradients
    assert job.student_spec is not None
    student_model = build_student(teacher, job.student_spec, seed=settings.seed).train()
    distiller, facts = prepare_pair(
        student_model, teacher, tokenizer, tokenizer, settings.attention_target, not settings.hidden_padding
    )
    dist = init_distributed()
    stream = CorpusStream(shards, tokenizer, settings.max_seq_len, dist.rank, dist.world_size, settings.max_sequences)
    record = stage_record(
        job,
        train_data_checksum=corpus_fingerprint(shards),  # names and sizes: the corpus is read once, by training
        corpus_shards=len(shards),
        teacher=job.teacher,
        student_init=job.student_spec.init,
        student_layers=job.student_spec.layers,
        max_seq_len=settings.max_seq_len,
        **facts,
    )
    loss = intermediate_loss_fn(teacher, settings.attention_target != "none")
    trainer = Trainer(
        student_model, stream, loss, settings, job.output_dir, extra_modules=distiller, record=record, job=job.to_dict()
    )
    record["sequences"] = trainer.num_examples  # per epoch, over every rank, as the trainer counted them
    return train_and_save(trainer, student_model, tokenizer, job, record)
