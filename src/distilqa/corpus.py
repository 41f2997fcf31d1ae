"""The general-distillation corpus as a stream: shards read as they are consumed, packed on the fly.

A corpus is one shard or a directory / s3:// prefix of shards: `.txt` or `.txt.gz` (one document
per line) and `.jsonl` or `.jsonl.zst` (one JSON object per line, the document in its "text"
field). Shards are never downloaded or held whole: each is opened as a byte stream (a file, or an
S3 GET read as it goes) and decoded line by line, so a bad line is reported as
`shard line N: what is wrong`.

The documents form a Hugging Face `datasets` IterableDataset (one generator shard per corpus shard)
split across ranks with `split_dataset_by_node`: with as many shards as a multiple of the ranks,
each rank reads its own shards; otherwise every rank reads every shard and keeps every
world_size-th document. `CorpusStream` packs a rank's documents into full sequences of
`max_seq_len` tokens ([CLS] tokens… [SEP], documents joined by [SEP]); its `state()` is the
dataset's own resumable state plus the tokens carried over to the next sequence, so a resumed run
continues at the exact token where the checkpoint was taken.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distilqa.errors import ConfigError, DataError

SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.zst")
TEXT_FIELD = "text"  # the document's field in a .jsonl line (The Pile's and most corpora's name)
MAX_LINE = 256 * 2**20  # bytes: a longer "line" is a file that is not line-oriented text


@dataclass(frozen=True)
class Shard:
    uri: str  # a local path or an s3:// URI
    name: str  # relative to the corpus location: what errors and the corpus fingerprint name
    size: int  # bytes


def corpus_shards(location: str | os.PathLike[str]) -> list[Shard]:
    """The shards of a corpus location, in a stable (sorted) order; only listed, nothing read."""
    from distilqa import storage

    location = os.fspath(location)
    allowed = ", ".join(SUFFIXES)
    if location.endswith(SUFFIXES):
        if not location.startswith("s3://") and not Path(location).is_file():
            raise DataError(f"{location}: no such corpus file or directory")
        name = location.rstrip("/").rsplit("/", 1)[-1]
        return [Shard(location, name, storage.size_of(location))]
    if not location.startswith("s3://"):
        path = Path(location)
        if path.is_file():
            raise DataError(f"{location}: corpus shards must be {allowed}")
        if not path.is_dir():
            raise DataError(f"{location}: no such corpus file or directory")
    sizes = storage.list_sizes(location)
    root = location.rstrip("/")
    shards = [Shard(f"{root}/{name}", name, size) for name, size in sizes.items() if name.endswith(SUFFIXES)]
    if not shards:
        raise DataError(f"{location}: no {allowed} shards here")
    return shards


def corpus_fingerprint(shards: list[Shard]) -> str:
    """sha256 of the shards' names and sizes: the same corpus read locally or from S3 gives the same
    value, and no shard is read to compute it (a Pile-sized corpus is read once, by training)."""
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(f"{shard.name}\0{shard.size}\n".encode())
    return "sha256:" + digest.hexdigest()


def _decompressed(raw: Any, name: str) -> Any:
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name.endswith(".zst"):
        import io

        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


def _read_error(name: str, exc: Exception) -> str | None:
    """The message for an exception raised while reading a shard, or None for one that is not about
    the shard (a bug: it keeps its traceback)."""
    import zstandard
    from botocore.exceptions import BotoCoreError

    if name.endswith(".gz") and isinstance(exc, (OSError, EOFError)):
        return f"not a valid gzip stream ({exc or 'truncated'})"
    if name.endswith(".zst") and isinstance(exc, zstandard.ZstdError):
        return f"not a valid zstd stream ({exc})"
    if isinstance(exc, (OSError, BotoCoreError)):
        return f"read failed ({exc})"
    return None


def read_documents(shard: Shard) -> Iterator[str]:
    """The documents of one shard, in order. Blank lines (or empty "text") are skipped; anything else
    that is not a document stops the run with a DataError naming the shard and the line."""
    from distilqa import storage

    stream = storage.open_stream(shard.uri)
    jsonl = shard.name.endswith((".jsonl", ".jsonl.zst"))
    line = documents = 0
    try:
        lines = _decompressed(stream, shard.name)
        while True:
            try:
                raw = lines.readline(MAX_LINE + 1)
            except Exception as exc:  # noqa: BLE001 - only a failure to read the shard is reworded
                message = _read_error(shard.name, exc)
                if message is None:
                    raise
                raise DataError(f"{shard.name} line {line + 1}: {message}") from None
            if not raw:
                break
            line += 1
            if len(raw) > MAX_LINE:
                raise DataError(f"{shard.name} line {line}: longer than {MAX_LINE:,} bytes; not line-oriented text")
            text = _document(raw, jsonl, shard.name, line)
            if text:
                documents += 1
                yield text
    finally:
        stream.close()
    if not documents:
        what = "empty (0 bytes)" if shard.size == 0 else f"no documents in {line} line(s)"
        raise DataError(f"{shard.name}: {what}; a corpus shard needs at least one document")


def _document(raw: bytes, jsonl: bool, name: str, line: int) -> str:
    where = f"{name} line {line}"
    if b"\0" in raw:
        raise DataError(f"{where}: binary data (a NUL byte), not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text (byte {exc.start} of the line)") from None
    if not jsonl:
        return text.strip()
    if not text.strip():
        return ""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get(TEXT_FIELD), str):
        raise DataError(f'{where}: expected a JSON object with a "{TEXT_FIELD}" string')
    return record[TEXT_FIELD].strip()


def _generate(shards: list[dict[str, Any]]) -> Iterator[dict[str, str]]:
    for shard in shards:
        for text in read_documents(Shard(**shard)):
            yield {TEXT_FIELD: text}


def documents_dataset(shards: list[Shard], rank: int = 0, world_size: int = 1) -> Any:
    """This rank's documents as a streaming `datasets.IterableDataset` (resumable: state_dict())."""
    from datasets import Features, IterableDataset, Value
    from datasets.distributed import split_dataset_by_node

    dataset = IterableDataset.from_generator(
        _generate,
        features=Features({TEXT_FIELD: Value("string")}),
        gen_kwargs={"shards": [asdict(s) for s in shards]},
    )
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size) if world_size > 1 else dataset


class CorpusStream:
    """One rank's packed sequences, read in order, with a state that resumes at the exact token.

    The trainer asks for `rows(epoch, n)`: the next n sequences of this rank in that epoch (a new
    epoch restarts the rank's shards). Memory is one tokenised document and the carried-over
    tokens, whatever the size of the corpus.
    """

    streamed = True

    def __init__(
        self,
        shards: list[Shard],
        tokenizer: Any,
        max_seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        max_sequences: int = 0,
    ) -> None:
        """`max_sequences` caps an epoch (over every rank; 0: the whole corpus)."""
        if max_seq_len < 8:
            raise ConfigError(f"max_seq_len must be at least 8, got {max_seq_len}")
        self.cls, self.sep, self.pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
        if self.cls is None or self.sep is None or self.pad is None:
            raise ConfigError("the tokenizer needs CLS, SEP and PAD tokens to pack plain text")
        self.shards, self.tokenizer, self.width, self.max_sequences = shards, tokenizer, max_seq_len, max_sequences
        self.token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self.dataset = documents_dataset(shards, rank, world_size)
        self.rank = rank
        self.epoch, self.consumed = 0, 0
        self._carry: list[int] = []
        self._documents: Iterator[dict[str, str]] | None = None

    def fingerprint(self) -> str:
        return f"{corpus_fingerprint(self.shards)}:{self.width}"

    # ------------------------------------------------------------------------------- reading

    def _restart(self, epoch: int, state: dict[str, Any] | None = None) -> None:
        self.dataset.set_epoch(epoch)
        if state is not None:
            self.dataset.load_state_dict(state["dataset"])
        self.epoch = epoch
        self.consumed = state["consumed"] if state else 0
        self._carry = list(state["carry"]) if state else []
        self._documents = iter(self.dataset)

    def _next_row(self) -> list[int] | None:
        body = self.width - 2
        while len(self._carry) < body:
            document = next(self._documents, None)  # type: ignore[arg-type]
            if document is None:
                return None  # the tail shorter than a sequence is not trained on
            self._carry.extend(self.tokenizer(document[TEXT_FIELD], add_special_tokens=False)["input_ids"])
            self._carry.append(self.sep)
        row = [self.cls, *self._carry[:body], self.sep]
        del self._carry[:body]
        return row

    def count(self, limit: int) -> int:
        """How many full sequences this rank's share holds, stopping at `limit` (0: no limit).
        Reads (and tokenises) that share once; training then reads it again from the start."""
        from distilqa.progress import progress_iter

        self._restart(0)
        n = 0
        rows = iter(self._next_row, None)
        for _ in progress_iter(rows, "count corpus sequences (rank 0's share)", unit="seq", shown=self.rank == 0):
            n += 1
            if limit and n >= limit:
                break
        self._documents = None
        return n

    def rows(self, epoch: int, n: int) -> dict[str, Any]:
        """The next `n` sequences of this rank in `epoch`, as tensors (every position is a token)."""
        import torch

        if self._documents is None or epoch != self.epoch:
            self._restart(epoch)
        out = []
        for _ in range(n):
            row = self._next_row()
            if row is None:
                raise DataError(
                    f"the corpus ended after {self.consumed} sequences of epoch {epoch} on this rank; "
                    "were shards changed while training?"
                )
            out.append(row)
        self.consumed += n
        ids = torch.tensor(out, dtype=torch.long)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.token_types:
            batch["token_type_ids"] = torch.zeros_like(ids)
        return batch

    # ------------------------------------------------------------------------ checkpointing

    def state(self) -> dict[str, Any]:
        """Where this rank is: the dataset's state (shard, document in shard) and the carried tokens."""
        dataset = self.dataset.state_dict() if self._documents is not None else None
        return {"epoch": self.epoch, "consumed": self.consumed, "dataset": dataset, "carry": list(self._carry)}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("dataset") is None:
            self._documents = None  # nothing was read yet in that run
            self.epoch, self.consumed = state.get("epoch", 0), 0
            return
        self._restart(state["epoch"], state)
