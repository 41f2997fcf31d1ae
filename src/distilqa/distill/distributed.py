"""The process group: one place that knows about ranks, devices and collectives.

A stage runs as one process, or as one of N ranks started by torchrun (WORLD_SIZE, RANK,
LOCAL_RANK in the environment): gloo on CPUs, NCCL on GPUs, one node or several. Global ranks
(`rank`) decide which examples a process trains on and who writes shared files; local ranks pick
the GPU. Every helper here is a no-op for a single process, so stage code has no `if distributed`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from distilqa.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """The first process of its node (writes node-local files)."""
        return self.local_rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)  # before the group exists, so NCCL binds each rank to its own GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def current() -> Dist:
    """The process group this process has joined (a single process when none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(d: Dist) -> None:
    if d.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast(d: Dist, value: Any) -> Any:
    """Rank 0's `value` on every rank (small picklable objects)."""
    if not d.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(d: Dist, values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (losses and metrics before they are logged)."""
    if not d.distributed or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)  # SUM: gloo has no AVG
    return {k: float(v) / d.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def any_rank(d: Dist, flag: bool) -> bool:
    if not d.distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=d.device)
    dist.all_reduce(t)
    return bool(t.item())


def min_over_ranks(d: Dist, value: int) -> int:
    """The smallest of each rank's value (how many steps every rank's share of a stream allows)."""
    if not d.distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def fingerprint(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def require_same_on_every_rank(d: Dist, what: str, values: dict[str, Any]) -> None:
    """Stop every rank with one message when ranks see different settings or data.

    Ranks that disagree would train different models and still average their gradients; this is
    checked before any work, naming the first rank that differs from rank 0 and the keys that do.
    """
    if not d.distributed:
        return
    import torch.distributed as dist

    from distilqa.settings import flatten

    gathered: list[Any] = [None] * d.world_size
    dist.all_gather_object(gathered, flatten(values))
    for rank, other in enumerate(gathered):
        if other != gathered[0]:
            keys = [k for k in sorted(set(other) | set(gathered[0])) if other.get(k) != gathered[0].get(k)]
            details = "; ".join(
                f"{k}: rank 0 has {_short(gathered[0].get(k))}, rank {rank} has {_short(other.get(k))}"
                for k in keys[:3]
            )
            raise ConfigError(f"the ranks disagree on the {what} ({details}): every process must run the same job")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def tear_down(d: Dist) -> None:
    if d.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
