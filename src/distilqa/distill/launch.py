"""Start a stage on 1 or N processes, on one node or several: torchrun's launcher, in-process.

One process on one node runs the stage right here (no extra interpreter start). Anything more
goes through torch's own launcher (`torch.distributed.run`, what the `torchrun` command calls),
started in this process so that a rank that stopped on bad input (exit 2, its message already
printed) turns into exit 2 here too, instead of torchrun's traceback. Several nodes use a static
rendezvous: node 0's address and port, each node its rank, so global ranks are deterministic.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilqa.distill.config import StageJob
from distilqa.errors import ConfigError


@dataclass(frozen=True)
class LaunchConfig:
    """How many processes run a stage, and where (torchrun's settings, under its names)."""

    nproc_per_node: int = field(
        default=0,
        metadata={"help": "processes on this node: 0 = one per GPU (NCCL), or 1 without GPUs; N > 1 on CPUs = gloo"},
    )
    nnodes: int = field(default=1, metadata={"help": "nodes in the job (each starts the same command)"})
    node_rank: int = field(default=0, metadata={"help": "this node's rank, 0 .. nnodes-1"})
    master_addr: str = field(default="", metadata={"help": "node 0's address (several nodes)"})
    master_port: int = field(default=29500, metadata={"help": "node 0's rendezvous port (several nodes)"})

    def __post_init__(self) -> None:
        if not isinstance(self.nproc_per_node, int) or self.nproc_per_node < 0:
            raise ConfigError(f"nproc_per_node must be >= 0, got {self.nproc_per_node!r}")
        if self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"need nnodes >= 1 and 0 <= node_rank < nnodes, got {self.nnodes} and {self.node_rank}")
        if self.nnodes > 1 and not self.master_addr:
            raise ConfigError("several nodes need master_addr (node 0's address) and master_port")
        if not 0 < self.master_port < 65536:
            raise ConfigError(f"master_port must be a TCP port, got {self.master_port}")


class LaunchFailed(Exception):
    """A rank failed for another reason than bad input (its traceback is above)."""

    def __init__(self, message: str, exitcode: int) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def processes_per_node(requested: int) -> int:
    if requested:
        return requested
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def result_of(job: StageJob) -> dict[str, Any]:
    """What a finished stage wrote: its training record (teacher logits: the cache's summary)."""
    if job.stage == "teacher_logits":
        from distilqa.distill.prediction import RECORD

        path = Path(job.logits_cache, RECORD)
    else:
        path = Path(job.output_dir, "training_record.json")
    return json.loads(path.read_text())


def launch(job: StageJob, config: LaunchConfig | None = None) -> dict[str, Any]:
    """Run `job` on `config`'s processes; returns the stage's record (rank 0's, from its output)."""
    config = config or LaunchConfig()
    nproc = processes_per_node(config.nproc_per_node)
    if (nproc == 1 and config.nnodes == 1) or "LOCAL_RANK" in os.environ:  # one process, or already a rank
        from distilqa.train import run

        return run(job)
    argv = [f"--nproc-per-node={nproc}", f"--nnodes={config.nnodes}"]
    if config.nnodes == 1:
        argv.append("--standalone")
    else:
        rendezvous = [f"--master-addr={config.master_addr}", f"--master-port={config.master_port}"]
        argv += [f"--node-rank={config.node_rank}", *rendezvous]
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    with tempfile.TemporaryDirectory(prefix="distilqa-job-") as tmp:
        path = job.write(Path(tmp) / "job.yaml")
        try:
            torchrun(get_args_parser().parse_args([*argv, "-m", "distilqa.train", str(path)]))
        except ChildFailedError as exc:
            codes = sorted({failure.exitcode for failure in exc.failures.values()})
            if 2 in codes:  # a rank refused the job; the agent then stopped the others
                raise ConfigError(f"{job.stage}: stopped on every failed rank, see the message above") from None
            raise LaunchFailed(f"{job.stage}: a rank failed with exit code {codes[0]}", 1) from None
    return result_of(job)


def launch_file(path: str, config: LaunchConfig | None = None) -> dict[str, Any]:
    """`distilqa train JOB.yaml`: the job file is validated here, once, before any process starts."""
    return launch(StageJob.read(path), config)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant at once, as a lost node or an OOM-killed pod does
    (the rehearsals of a retried pod use it; Linux /proc).

    torchrun starts its workers in sessions of their own, so killing the launcher's process group
    alone would leave them training."""
    import signal

    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass
