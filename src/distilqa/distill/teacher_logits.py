"""Teacher start/end logits, computed once on the student's token ids and cached on disk.

S2b needs the large teacher's logits for every training feature in every epoch; computing them
once (fp32, [features, max_seq_len, 2], ≈0.4 GB for SQuAD train) turns each epoch into
student-only work. The cache is a memory-mapped .npy keyed by a checksum of the teacher's
weights, the features' token ids and the window settings, so a rerun, a resumed job or another
stage reuses it, and any change to teacher, data or tokenisation computes it anew.

The teacher runs once over every feature, so it runs as fast as the hardware allows: on the GPU
when there is one (a V100 pipeline step must not fall back to the CPU), in bf16/fp16 where that
is native (AMX or AVX-512 BF16 CPUs, GPUs), on batches of similar length. The precision is part
of the cache key: a cache made in bf16 is never mistaken for an fp32 one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distilqa.progress import progress_bar
from distilqa.storage import cache_dir


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


def logits_precision(device: torch.device) -> str:
    """The fastest precision that keeps soft targets faithful on this device (also part of the key)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # V100: fp16
    from distilqa.inference import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16() else "fp32"  # emulated bf16 runs slower than fp32


def logits_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cache_key(teacher: str, input_ids: Tensor, settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(teacher.encode())
    digest.update(np.ascontiguousarray(input_ids.numpy()).tobytes())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def cached_teacher_logits(
    teacher_model: Any,
    teacher_fp: str,
    data: dict[str, Tensor],
    settings: dict[str, Any],
    batch_size: int = 32,
    directory: str | os.PathLike[str] | None = None,
    device: torch.device | None = None,
    precision: str | None = None,
) -> tuple[np.ndarray, bool]:
    """([features, seq, 2] float32 memmap, whether it came from the cache).

    `device` and `precision` default to `logits_device()` and its `logits_precision`.
    """
    device = device or logits_device()
    precision = precision or logits_precision(device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    key = cache_key(teacher_fp, data["input_ids"], {**settings, "teacher_precision": precision})
    root = Path(directory) if directory else cache_dir() / "teacher-logits"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{key}.npy"
    if path.exists():
        return np.load(path, mmap_mode="c"), True
    n, width = data["input_ids"].shape
    tmp = root / f".{key}.{os.getpid()}.partial.npy"  # per process: DDP ranks may each fill it
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, width, 2))
    teacher_model.eval().to(device)
    lengths = data["attention_mask"].sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)  # similar lengths share a batch: less padding
    bar = progress_bar("teacher logits", "feature")(n)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for begin in range(0, n, batch_size):
            idx = order[begin : begin + batch_size]
            length = int(lengths[idx].max())
            inputs = {
                k: v[idx, :length].to(device)
                for k, v in data.items()
                if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            result = teacher_model(**inputs)
            rows = idx.numpy()
            out[rows, :length, 0] = result.start_logits.float().cpu().numpy()
            out[rows, :length, 1] = result.end_logits.float().cpu().numpy()
            bar.update(len(rows))
    bar.close()
    out.flush()
    del out
    os.replace(tmp, path)  # complete or absent, never half-written under the real name
    (root / f"{key}.json").write_text(
        json.dumps(
            {"teacher": teacher_fp, "features": n, "seq": width, "teacher_precision": precision, **settings}, indent=2
        )
    )
    return np.load(path, mmap_mode="c"), False  # copy-on-write: torch wants writable memory
