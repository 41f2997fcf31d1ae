"""SQuAD training features as a Hugging Face `datasets` Arrow table: tokenized once per data version,
memory-mapped, shared by every rank of a node.

Why: features built in Python lists and held as padded int64 tensors cost every rank several KB per
feature, and every rank, retry and stage tokenizes everything again. Here the windows (the shared
`Windower`, so training sees the features inference sees) are built with `Dataset.map(batched=True,
num_proc=…)` into unpadded int32 Arrow files under a directory named by a fingerprint of the data,
the tokenizer and the window settings. Every rank memory-maps the same files (the page cache holds
one copy); batches are padded only to their own longest feature. Local rank 0 builds into a
temporary directory that is renamed into place when complete, so a reader never sees half a cache;
the other ranks wait for the rename.

The cache directory may be an s3:// prefix (a pipeline's `resources.features_root`): features are
then built in $DISTILQA_CACHE/features and published under the prefix, data files first and the
index last, so every later step, retry and node downloads them instead of tokenizing again; a
prefix without its index (a publisher killed midway) counts as absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from distilqa.errors import DataError
from distilqa.squad import SquadDataset
from distilqa.windows import Feature, PairTemplate, WindowConfig, Windower

FORMAT = 2  # bump when the table's columns or their meaning change: old caches are then not reused
INDEX = "index.json"


def data_digest(dataset: SquadDataset) -> str:
    """sha256 of what the features depend on: each question's id, text, context and first answer."""
    digest = hashlib.sha256()
    for _, paragraph, qa in dataset.iter_questions():
        answer = (qa.answers[0].answer_start, qa.answers[0].answer_end) if qa.answers else None
        digest.update(json.dumps([qa.id, qa.question, paragraph.context, answer]).encode())
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    backend = tokenizer.backend_tokenizer.to_str()
    names = list(tokenizer.model_input_names)
    return hashlib.sha256(json.dumps([type(tokenizer).__name__, names, backend]).encode()).hexdigest()


def cache_key(dataset: SquadDataset, tokenizer: Any, window: WindowConfig, offsets: bool = False) -> str:
    """The cache's name; a table with offsets (for answer extraction) is another table than a training one."""
    parts = [FORMAT, data_digest(dataset), tokenizer_digest(tokenizer), asdict(window), offsets]
    prefix = "eval-features-" if offsets else "features-"
    return prefix + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _write_rows(dataset: SquadDataset, path: Path) -> None:
    """The questions as an Arrow file, written in chunks: the map below reads it memory-mapped, so
    neither this process nor the tokenizing ones hold the whole data set."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    schema = datasets.Features(
        {
            "question": datasets.Value("string"),
            "context": datasets.Value("string"),
            "answer_start": datasets.Value("int32"),
            "answer_end": datasets.Value("int32"),
        }
    )
    with ArrowWriter(features=schema, path=str(path)) as writer:
        chunk: dict[str, list] = {name: [] for name in schema}
        for _, paragraph, qa in dataset.iter_questions():
            chunk["question"].append(qa.question)
            chunk["context"].append(paragraph.context)
            chunk["answer_start"].append(qa.answers[0].answer_start if qa.answers else -1)
            chunk["answer_end"].append(qa.answers[0].answer_end if qa.answers else -1)
            if len(chunk["question"]) == 4096:
                writer.write_batch(chunk)
                chunk = {name: [] for name in schema}
        if chunk["question"]:
            writer.write_batch(chunk)
        writer.finalize()


def _tokenize(
    batch: dict[str, list], indices: list[int], tokenizer: Any, window: WindowConfig, offsets: bool = False
) -> dict[str, list]:
    windower = Windower(tokenizer, window)
    answers = [(s, e) if s >= 0 else None for s, e in zip(batch["answer_start"], batch["answer_end"], strict=True)]
    features = windower.features(batch["question"], batch["context"], answers)
    out: dict[str, list] = {
        "input_ids": [f.input_ids for f in features],
        "start_positions": [f.start_position for f in features],
        "end_positions": [f.end_position for f in features],
        "example": [indices[f.example_index] for f in features],
        "length": [len(f.input_ids) for f in features],
    }
    if windower.template.uses_token_types:
        out["token_type_ids"] = [f.token_type_ids for f in features]
    if offsets:  # what answer extraction needs: where the context starts and each token's character span
        out["context_start"] = [f.context_start for f in features]
        out["offsets"] = [[a for span in f.offsets for a in span] for f in features]
    return out


def _schema(uses_token_types: bool, offsets: bool) -> Any:
    import datasets

    columns = {
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "start_positions": datasets.Value("int32"),
        "end_positions": datasets.Value("int32"),
        "example": datasets.Value("int32"),
        "length": datasets.Value("int32"),
    }
    if uses_token_types:
        columns["token_type_ids"] = datasets.Sequence(datasets.Value("int8"))
    if offsets:
        columns["context_start"] = datasets.Value("int32")
        columns["offsets"] = datasets.Sequence(datasets.Value("int32"))  # begin, end of each context token
    return datasets.Features(columns)


def _roots(cache_dir: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """(the local directory, the shared s3:// prefix or None) of a cache location."""
    location = os.fspath(cache_dir)
    if location.startswith("s3://"):
        from distilqa.storage import cache_dir as local_cache

        return local_cache() / "features", location.rstrip("/")
    return Path(location), None


def _fetch(remote: str, root: Path, key: str) -> bool:
    """Download a published cache into `root/key`; False when the prefix holds no complete one."""
    from distilqa import storage

    if INDEX not in storage.list_sizes(remote):
        return False
    tmp = root / f".{key}.{os.getpid()}.fetch"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        storage.download_prefix(remote, tmp)
        try:
            _read_index(tmp)
        except DataError as exc:
            raise DataError(
                f"{remote}: the published feature cache is unreadable ({exc}); delete it to rebuild"
            ) from None
        _move_into_place(tmp, root / key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _move_into_place(tmp: Path, target: Path) -> None:
    """Commit a finished cache by renaming it; one made meanwhile by another process (a rank or node
    sharing the directory) is as good, and this one is dropped."""
    try:
        tmp.rename(target)
    except OSError:
        if not (target / INDEX).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(path: Path, remote: str) -> None:
    """Upload a finished cache: the data files, then the index that makes it visible."""
    from distilqa import storage

    for file in sorted(path.iterdir(), key=lambda f: f.name == INDEX):
        storage.upload_file(file, f"{remote}/{file.name}")


def build_features(
    dataset: SquadDataset,
    tokenizer: Any,
    window: WindowConfig,
    cache_dir: str | os.PathLike[str],
    num_proc: int = 1,
    offsets: bool = False,
) -> tuple[Path, bool]:
    """The cache directory of these features, built if missing: (path, True when built now).

    `offsets` adds what answer extraction needs (evaluation reads such a table). With an s3://
    `cache_dir` a published cache is downloaded rather than built, and one built here is published."""
    key = cache_key(dataset, tokenizer, window, offsets)
    root, remote = _roots(cache_dir)
    target = root / key
    if (target / INDEX).is_file():
        return target, False
    root.mkdir(parents=True, exist_ok=True)
    if remote is not None and _fetch(f"{remote}/{key}", root, key):
        return target, False
    _build(dataset, tokenizer, window, root, key, num_proc, offsets)
    if remote is not None:
        _publish(target, f"{remote}/{key}")
    return target, True


def _build(
    dataset: SquadDataset, tokenizer: Any, window: WindowConfig, root: Path, key: str, num_proc: int, offsets: bool
) -> None:
    import datasets

    target = root / key
    template = PairTemplate.from_tokenizer(tokenizer)
    tmp = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_rows(dataset, tmp / "rows.arrow")
        rows = datasets.Dataset.from_file(str(tmp / "rows.arrow"))
        table = rows.map(
            _tokenize,
            batched=True,
            batch_size=512,
            with_indices=True,
            num_proc=num_proc if num_proc > 1 else None,
            remove_columns=rows.column_names,
            fn_kwargs={"tokenizer": tokenizer, "window": window, "offsets": offsets},
            features=_schema(template.uses_token_types, offsets),
            cache_file_name=str(tmp / "features.arrow"),
            new_fingerprint=key,
            desc="features",
        )
        files = sorted(Path(f["filename"]).name for f in table.cache_files)
        index = {
            "key": key,
            "format": FORMAT,
            "files": files,
            "rows": len(table),
            "questions": len(rows),
            "max_seq_len": window.max_seq_len,
            "pad_id": template.pad_id,
            "uses_token_types": template.uses_token_types,
            "offsets": offsets,
        }
        del table, rows
        (tmp / "rows.arrow").unlink()
        (tmp / INDEX).write_text(json.dumps(index, indent=1))
        _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_index(path: Path) -> dict[str, Any]:
    """A cache's index, checked: a hand-edited or foreign one is a DataError naming it."""
    where = path / INDEX
    try:
        index = json.loads(where.read_text())
        if not isinstance(index, dict):
            raise ValueError("not a JSON object")
        fields = {name: index[name] for name in ("key", "format", "files", "pad_id", "uses_token_types")}
        fields["max_seq_len"] = int(index["max_seq_len"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise DataError(f"{where}: not a feature-cache index ({detail}); delete {path} to rebuild it") from None
    if index["format"] != FORMAT:
        raise DataError(f"{path}: a feature cache of format {index['format']}, not {FORMAT}")
    return index


class FeatureTable:
    """Memory-mapped features; `batch(indices)` pads to the batch's longest feature (dynamic padding)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import datasets

        self.path = Path(path)
        index = _read_index(self.path)
        parts = [datasets.Dataset.from_file(str(self.path / name)) for name in index["files"]]
        self.table = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
        self.key, self.pad_id, self.uses_token_types = index["key"], index["pad_id"], index["uses_token_types"]
        self.width = int(index["max_seq_len"])
        self.has_offsets = bool(index.get("offsets"))
        self._lengths: np.ndarray | None = None
        self._examples: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.table)

    def fingerprint(self) -> str:
        """What a resumed run must train on: the data, tokenizer and window version of the cache."""
        return self.key

    def lengths(self) -> np.ndarray:
        """Tokens of each feature (what length-grouped sampling sorts by)."""
        if self._lengths is None:
            self._lengths = np.asarray(self.table.with_format("numpy")["length"], dtype=np.int64)
        return self._lengths

    def feature_rows(self, first: int, last: int) -> range:
        """The rows of the questions first..last-1 (the table keeps the data set's question order)."""
        if self._examples is None:
            self._examples = np.asarray(self.table.with_format("numpy")["example"], dtype=np.int64)
        begin, end = np.searchsorted(self._examples, [first, last])
        return range(int(begin), int(end))

    def windows(self, rows: range, first_example: int = 0) -> list[Feature]:
        """The features at `rows` as the Windower made them (example indices counted from `first_example`),
        for answer extraction; only a table built with offsets has what that needs."""
        if not self.has_offsets:
            raise DataError(f"{self.path}: a training table, without the offsets answer extraction needs")
        part = self.table[rows.start : rows.stop]
        types = part["token_type_ids"] if self.uses_token_types else [None] * len(rows)
        return [
            Feature(
                example_index=example - first_example,
                input_ids=ids,
                token_type_ids=token_types,
                context_start=context_start,
                offsets=list(zip(spans[0::2], spans[1::2], strict=True)),
                start_position=start,
                end_position=end,
            )
            for example, ids, token_types, context_start, spans, start, end in zip(
                part["example"],
                part["input_ids"],
                types,
                part["context_start"],
                part["offsets"],
                part["start_positions"],
                part["end_positions"],
                strict=True,
            )
        ]

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """Tensors of the features at `indices`, in that order, padded to the longest of them."""
        import torch

        rows = self.table[[int(i) for i in indices]]
        width = max(rows["length"]) if rows["length"] else 0
        n = len(rows["length"])
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64) if self.uses_token_types else None
        for i, seq in enumerate(rows["input_ids"]):
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = 1
            if types is not None:
                types[i, : len(seq)] = rows["token_type_ids"][i]
        out = {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "start_positions": torch.tensor(rows["start_positions"], dtype=torch.long),
            "end_positions": torch.tensor(rows["end_positions"], dtype=torch.long),
        }
        if types is not None:
            out["token_type_ids"] = torch.from_numpy(types)
        return out


def shared_features(
    dataset: SquadDataset,
    tokenizer: Any,
    window: WindowConfig,
    cache_dir: str | os.PathLike[str],
    num_proc: int = 1,
    timeout_s: float = 6 * 3600,
) -> FeatureTable:
    """The features for this node's ranks: local rank 0 builds (or finds) the cache, the others wait
    for it and open the same files."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank == 0:
        path, _ = build_features(dataset, tokenizer, window, cache_dir, num_proc)
        return FeatureTable(path)
    path = _roots(cache_dir)[0] / cache_key(dataset, tokenizer, window)
    deadline = time.monotonic() + timeout_s
    while not (path / INDEX).is_file():
        if time.monotonic() > deadline:
            raise DataError(f"{path}: local rank 0 did not finish the feature cache within {timeout_s:.0f}s")
        time.sleep(0.5)
    return FeatureTable(path)
