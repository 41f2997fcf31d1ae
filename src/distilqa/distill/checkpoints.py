"""Checkpoints in a local directory or under an s3:// prefix, written by every rank, committed once.

Layout: `<dir>/checkpoint-<step>/` holds `state.pt` (model, optimizer, scheduler, scaler: the same
on every rank, written by rank 0), `rng-<rank>.pt` (each rank's own RNG states: dropout differs
per rank, so every rank restores its own) and `meta.json`, written last by rank 0 after every rank
has written its files. A checkpoint without meta.json is an interrupted write: it is ignored and
replaced. meta.json also holds what a resumed run must match to end with the same weights (the
job's settings, a fingerprint of the data, the world size).

In a pod, checkpoints live outside the step's output artifact (KFP uploads that only when the
step succeeds): the pipeline gives every step an s3:// checkpoint_dir of its own per run, so a
retried pod finds the last checkpoint of the attempt before it.
"""

from __future__ import annotations

import io
import json
from typing import Any

from distilqa.storage import list_files, read_bytes, remove_tree, write_bytes

PREFIX = "checkpoint-"
META = "meta.json"
STATE = "state.pt"


def rng_name(rank: int) -> str:
    return f"rng-{rank}.pt"


class CheckpointStore:
    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/")

    def _path(self, step: int, name: str = "") -> str:
        base = f"{self.location}/{PREFIX}{step}"
        return f"{base}/{name}" if name else base

    def _names(self) -> list[str]:
        return list_files(self.location)

    def committed_steps(self) -> list[int]:
        steps = []
        for name in self._names():
            head, _, file = name.partition("/")
            if file == META and head.startswith(PREFIX) and head[len(PREFIX) :].isdigit():
                steps.append(int(head[len(PREFIX) :]))
        return sorted(steps)

    def all_steps(self) -> list[int]:
        heads = {name.partition("/")[0] for name in self._names()}
        return sorted(int(h[len(PREFIX) :]) for h in heads if h.startswith(PREFIX) and h[len(PREFIX) :].isdigit())

    def write(self, step: int, name: str, data: bytes) -> None:
        write_bytes(self._path(step, name), data)

    def read(self, step: int, name: str) -> bytes:
        return read_bytes(self._path(step, name))

    def has(self, step: int, name: str) -> bool:
        return name in {n.partition("/")[2] for n in self._names() if n.startswith(f"{PREFIX}{step}/")}

    def remove(self, step: int) -> None:
        remove_tree(self._path(step))

    def write_meta(self, step: int, meta: dict[str, Any]) -> None:
        self.write(step, META, json.dumps(meta, indent=2, sort_keys=True, default=str).encode())

    def read_meta(self, step: int) -> dict[str, Any]:
        return json.loads(self.read(step, META))

    def prune(self, keep: int = 2) -> None:
        """Keep the last `keep` committed checkpoints; drop older ones and abandoned partial writes."""
        committed = self.committed_steps()
        kept = set(committed[-keep:])
        newest = committed[-1] if committed else -1
        for step in self.all_steps():
            if step not in kept and step <= newest:
                self.remove(step)


def save_torch(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def load_torch(data: bytes) -> Any:
    """Always onto the CPU: states saved on a GPU are moved by load_state_dict, and RNG states
    must stay CPU tensors (torch.set_rng_state refuses CUDA ones)."""
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """'key: checkpoint X, this run Y' for every leaf that differs."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {json.dumps(a, default=str)}, this run {json.dumps(b, default=str)}")
    return out
