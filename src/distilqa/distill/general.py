"""Stage 1: general distillation on plain text (TinyBERT's intermediate loss, no logits).

The teacher is a base LM (roberta-base in the recipe); the student is built from it
(`StudentSpec`: every k-th teacher layer, or a random init of a smaller config). The corpus is
one document per line, from a .txt / .txt.gz file, a directory of such shards, or s3://
(an object or a prefix). Documents are tokenised once and packed into full-length sequences
([CLS] tokens… [SEP], documents joined by [SEP]) so no compute is spent on padding.

The packed corpus is held in memory (int32 ids): fine for tens of millions of tokens; a Pile-
sized run should shard the corpus across pipeline runs (`max_sequences` caps one run).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distilqa.distill.config import GeneralConfig, StageJob
from distilqa.distill.intermediate import intermediate_loss_fn, prepare_pair
from distilqa.distill.stage import stage_record, train_and_save
from distilqa.distill.student import build_student
from distilqa.distill.trainer import Trainer
from distilqa.errors import ConfigError, DataError
from distilqa.model_io import load_pretrained
from distilqa.progress import progress_iter

TEXT_SUFFIXES = (".txt", ".txt.gz")


def _decode(raw: bytes, name: str) -> str:
    if name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{name}: not a valid gzip file ({exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text (byte {exc.start})") from None


def corpus_files(location: str | os.PathLike[str]) -> list[Path]:
    """The text shards of a corpus location, in a stable (sorted) order."""
    location = os.fspath(location)
    if location.startswith("s3://"):
        from distilqa.storage import cache_dir, download_prefix, read_bytes

        if location.endswith(TEXT_SUFFIXES):
            local = cache_dir() / "corpus" / location.replace("s3://", "").replace("/", "_")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(read_bytes(location))
            return [local]
        location = str(download_prefix(location))
    path = Path(location)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
        if not files:
            raise DataError(f"{location}: no {' or '.join(TEXT_SUFFIXES)} files in this directory")
        return files
    if not path.is_file():
        raise DataError(f"{location}: no such corpus file or directory")
    if not path.name.endswith(TEXT_SUFFIXES):
        raise DataError(f"{location}: corpus files must be {' or '.join(TEXT_SUFFIXES)} (one document per line)")
    return [path]


def corpus_checksum(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return "sha256:" + digest.hexdigest()


def read_documents(files: list[Path]) -> Iterator[str]:
    for file in files:
        for line in _decode(file.read_bytes(), str(file)).splitlines():
            if line.strip():
                yield line.strip()


def pack_corpus(
    documents: Iterator[str], tokenizer: Any, max_seq_len: int, max_sequences: int | None = None
) -> dict[str, Tensor]:
    """Full sequences of `max_seq_len` tokens; the tail shorter than half a sequence is dropped."""
    if max_seq_len < 8:
        raise ConfigError(f"max_seq_len must be at least 8, got {max_seq_len}")
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    if cls is None or sep is None or pad is None:
        raise ConfigError("the tokenizer needs CLS, SEP and PAD tokens to pack plain text")
    body = max_seq_len - 2
    rows: list[list[int]] = []
    stream: list[int] = []
    for doc in progress_iter(documents, "tokenise corpus", unit="doc"):
        stream.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        stream.append(sep)
        while len(stream) >= body:
            rows.append([cls, *stream[:body], sep])
            del stream[:body]
            if max_sequences and len(rows) >= max_sequences:
                break
        if max_sequences and len(rows) >= max_sequences:
            break
    else:
        if len(stream) >= body // 2:
            rows.append([cls, *stream, sep])
    if not rows:
        raise DataError(f"the corpus holds fewer than {body // 2} tokens: nothing to train on")
    ids = torch.full((len(rows), max_seq_len), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), max_seq_len), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    data = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        data["token_type_ids"] = torch.zeros_like(ids)
    return data


def distill_general(job: StageJob) -> dict[str, Any]:
    settings: GeneralConfig = job.train  # type: ignore[assignment]
    files = corpus_files(job.train_data)  # a wrong corpus path fails before any model is loaded
    tokenizer, teacher = load_pretrained(job.teacher, "AutoModel")
    teacher.pooler = None  # not in the loss: computing it would only leave DDP waiting for its gradients
    assert job.student_spec is not None
    student_model = build_student(teacher, job.student_spec, seed=settings.seed).train()
    distiller, facts = prepare_pair(
        student_model, teacher, tokenizer, tokenizer, settings.attention_target, not settings.hidden_padding
    )
    data = pack_corpus(read_documents(files), tokenizer, settings.max_seq_len, settings.max_sequences or None)
    record = stage_record(
        job,
        train_data_checksum=corpus_checksum(files),
        teacher=job.teacher,
        student_init=job.student_spec.init,
        student_layers=job.student_spec.layers,
        sequences=len(data["input_ids"]),
        max_seq_len=settings.max_seq_len,
        **facts,
    )
    loss = intermediate_loss_fn(teacher, settings.attention_target != "none")
    trainer = Trainer(
        student_model, data, loss, settings, job.output_dir, extra_modules=distiller, record=record, job=job.to_dict()
    )
    return train_and_save(trainer, student_model, tokenizer, job, record)
