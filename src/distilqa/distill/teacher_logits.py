"""Teacher start/end logits, computed once on the student's token ids and cached on disk.

S2b needs the large teacher's logits for every training feature in every epoch; computing them
once (fp32, [features, max_seq_len, 2], ≈0.4 GB for SQuAD train) turns each epoch into
student-only work. The cache is a memory-mapped .npy keyed by a checksum of the teacher's
weights, the features' token ids and the window settings, so a rerun, a resumed job or another
stage reuses it, and any change to teacher, data or tokenisation computes it anew.

The teacher runs once over every feature on each rank's own device (a V100 pipeline step must not
fall back to the CPU), on batches of similar length, every rank its share of the features, so N
GPUs fill the cache about N times as fast. It computes in fp32 by default, as the recipe does; a
lower precision (bf16, fp16, or `auto` = the fastest native one) is an explicit setting and part
of the cache key: a cache made in bf16 is never mistaken for an fp32 one.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from distilqa.distill import distributed
from distilqa.progress import progress_bar
from distilqa.storage import cache_dir

if TYPE_CHECKING:
    from distilqa.distill.trainer import TrainData


def teacher_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """sha256 over the teacher directory's weight and config files (names and bytes)."""
    digest = hashlib.sha256()
    root = Path(model_dir)
    if not root.is_dir():
        return "id:" + str(model_dir)  # a hub id: its name is all we know
    for path in sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".bin", ".json")):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def logits_precision(requested: str, device: torch.device) -> str:
    """fp32 (the recipe's default), bf16 or fp16; `auto` is the training rule's native precision."""
    from distilqa.distill.precision import resolve_amp_here

    return resolve_amp_here(requested, device.type, device.index or 0)


def cache_key(teacher: str, data_fingerprint: str, settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(teacher.encode())
    digest.update(data_fingerprint.encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def cached_teacher_logits(
    teacher_model: Any,
    teacher_fp: str,
    data: dict[str, Tensor] | TrainData,
    settings: dict[str, Any],
    batch_size: int = 32,
    directory: str | os.PathLike[str] | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> tuple[np.ndarray, bool]:
    """([features, seq, 2] float32 memmap, whether it came from the cache), row i for feature i of `data`
    (tensors, or the Arrow feature table the stage trains on: the logits join on its feature index).

    Under DDP every rank computes a share of the features (every world_size-th of the length-sorted
    order, so shares cost the same), the shares are all-gathered in chunks, and the first process
    of each node writes the file. `device` defaults to this rank's device; `precision` (fp32, bf16,
    fp16 or auto) is part of the key.
    """
    d = distributed.current()
    device = device or d.device
    precision = logits_precision(precision, device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    from distilqa.distill.trainer import TensorData

    data = TensorData(data) if isinstance(data, dict) else data
    key = cache_key(teacher_fp, data.fingerprint(), {**settings, "teacher_precision": precision})
    root = Path(directory) if directory else cache_dir() / "teacher-logits"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}.npy"
    if not distributed.any_rank(d, not path.exists()):  # every rank sees it: nobody computes
        return np.load(path, mmap_mode="c"), True
    n, width = len(data), data.width
    lengths = torch.as_tensor(data.lengths())
    order = torch.argsort(lengths, descending=True, stable=True)  # similar lengths share a batch: less padding
    mine = order[d.rank :: d.world_size]
    share = torch.zeros((len(mine), width, 2), dtype=torch.float32)
    teacher_model.eval().to(device)
    bar = progress_bar("teacher logits", "feature", shown=d.is_main)(len(mine))
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for begin in range(0, len(mine), batch_size):
            idx = mine[begin : begin + batch_size]
            length = int(lengths[idx].max())
            inputs = {k: v[:, :length].to(device) for k, v in data.batch(idx).items() if k in _INPUTS}
            result = teacher_model(**inputs)
            # padding positions stay 0: the cache must not depend on which features shared a batch
            real = inputs["attention_mask"].cpu() > 0
            share[begin : begin + len(idx), :length, 0] = result.start_logits.float().cpu().masked_fill(~real, 0.0)
            share[begin : begin + len(idx), :length, 1] = result.end_logits.float().cpu().masked_fill(~real, 0.0)
            bar.update(len(idx))
    bar.close()
    writer = d.is_local_main
    tmp = root / f".{key}.{socket.gethostname()}.{os.getpid()}.partial.npy"  # per process: no two writers collide
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, width, 2)) if writer else None
    for rows, values in _gathered_shares(d, order, share, device):
        if out is not None:
            out[rows.numpy()] = values.numpy()
    if out is not None:
        out.flush()
        del out
        os.replace(tmp, path)  # complete or absent, never half-written under the real name
        meta = {"teacher": teacher_fp, "features": n, "seq": width, "teacher_precision": precision, **settings}
        (root / f"{key}.json").write_text(json.dumps(meta, indent=2))
    distributed.barrier(d)
    return np.load(path, mmap_mode="c"), False  # copy-on-write: torch wants writable memory


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_CHUNK = 256  # features per all-gather: bounded memory on every rank whatever the data size


def _gathered_shares(d: distributed.Dist, order: Tensor, share: Tensor, device: torch.device):
    """(feature indices, logits) of every rank's share, chunk by chunk (this process's alone without DDP)."""
    if not d.distributed:
        yield order, share
        return
    import torch.distributed as dist

    per_rank = [order[r :: d.world_size] for r in range(d.world_size)]
    longest = max(len(p) for p in per_rank)
    for start in range(0, longest, _CHUNK):
        piece = torch.zeros((_CHUNK, *share.shape[1:]), dtype=share.dtype)
        mine = share[start : start + _CHUNK]
        piece[: len(mine)] = mine
        piece = piece.to(device)
        gathered = [torch.empty_like(piece) for _ in range(d.world_size)]
        dist.all_gather(gathered, piece)
        for rank, values in enumerate(gathered):
            rows = per_rank[rank][start : start + _CHUNK]
            yield rows, values[: len(rows)].cpu()
