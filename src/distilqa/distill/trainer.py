"""One training loop for every stage: fine-tuning, S1, S2a, S2b.

A stage gives a model, a dataset of tensors and a loss function; the trainer owns everything a
long GPU job needs: AdamW with weight decay (no decay on biases and LayerNorm weights), linear
warmup by proportion then linear decay, gradient clipping, gradient accumulation up to a fixed
global batch from any per-device batch and any number of processes, seeds, AMP chosen from the
hardware, DDP under torchrun (gloo on CPU, NCCL on GPU, one node or several), and checkpoints that
resume exactly: model, optimizer, scheduler and scaler, each rank's own RNG states, and the data
position, so a run killed at any moment ends with the same weights as one that was not.

Data order: in epoch e, a permutation seeded by (seed, e) is cut into global batches of
`batch_size` examples (a last incomplete batch is dropped); a global batch is split into
`world_size x accumulation` micro-batches by global rank, so the update does not depend on how
many processes or how much accumulation produced it.

Streamed data (S1's corpus, `distilqa.corpus.CorpusStream`) has no indices: each rank reads its own
share in order, an epoch is as many steps as the smallest share allows (counted once, before the
first step, so the schedule knows its length), and each rank's stream position is saved with its
RNG state, so a resumed run reads on from the exact token.

Everything a model computes must take part in its loss: DDP waits for a gradient of every
parameter it wraps. Stages therefore hand the trainer only the modules they train (S1 drops the
pooler, S2a trains the encoder without the QA head) rather than asking DDP to search for unused
parameters on every step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from distilqa.distill import distributed
from distilqa.distill.checkpoints import (
    STATE,
    CheckpointStore,
    differences,
    load_torch,
    rng_name,
    save_torch,
)
from distilqa.distill.config import NOT_AFFECTING_WEIGHTS, TrainConfig
from distilqa.distill.distributed import init_distributed
from distilqa.distill.precision import resolve_amp_here, torch_dtype
from distilqa.errors import ConfigError, DataError
from distilqa.progress import progress_bar
from distilqa.settings import flatten

# loss_fn(model, batch) -> {"loss": ..., other terms}; with extra_modules: loss_fn(model, batch, extra)
LossFn = Callable[..., dict[str, Tensor]]
LABELS = ("start_positions", "end_positions")


def _param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def data_fingerprint(data: dict[str, Tensor]) -> str:
    """sha256 of the token ids and labels: what a resumed run must train on to be exact."""
    digest = hashlib.sha256()
    for name in ("input_ids", *LABELS):
        if name in data:
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(data[name].numpy()).tobytes())
    return "sha256:" + digest.hexdigest()


class TrainData(Protocol):
    """What the trainer reads: a number of examples, their lengths (for length-grouped batches), a
    batch by example indices, and a fingerprint a resumed run must match. `TensorData` holds tensors;
    `distilqa.features.FeatureTable` memory-maps an Arrow feature cache."""

    width: int  # the longest a feature can be (the window's max_seq_len)

    def __len__(self) -> int: ...

    def lengths(self) -> Any: ...

    def batch(self, indices: Tensor) -> dict[str, Tensor]: ...

    def fingerprint(self) -> str: ...


class StreamData(Protocol):
    """What the trainer reads from a stream: this rank's next rows, and a resumable position."""

    streamed: bool  # True
    width: int
    max_sequences: int  # a cap on the sequences of an epoch, over every rank (0: the whole stream)
    epoch: int  # where this rank's stream is: the epoch, and the sequences read in it
    consumed: int

    def count(self, limit: int) -> int: ...

    def rows(self, epoch: int, n: int) -> dict[str, Tensor]: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def fingerprint(self) -> str: ...


class TensorData:
    """Examples as tensors of one first dimension (S1's packed sequences, S2a's paired features)."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        n = len(next(iter(tensors.values())))
        if any(len(t) != n for t in tensors.values()):
            raise ConfigError("every data tensor must have the same first dimension")
        self.tensors, self._n = tensors, n
        self.width = tensors["input_ids"].shape[1] if "input_ids" in tensors else 0

    def __len__(self) -> int:
        return self._n

    def lengths(self) -> Tensor | None:
        mask = self.tensors.get("attention_mask")
        return None if mask is None else mask.sum(dim=1)

    def batch(self, indices: Tensor) -> dict[str, Tensor]:
        return {name: t[indices] for name, t in self.tensors.items()}

    def fingerprint(self) -> str:
        return data_fingerprint(self.tensors)


def resume_identity(job: dict[str, Any] | None, config: TrainConfig) -> dict[str, Any]:
    """The settings that decide the weights: the job less its paths, tracking and logging cadence.

    Input paths are left out on purpose: a retried pod may see the same artifacts at other local
    paths; the data fingerprint and the stage's settings are what must match.
    """
    train = {k: v for k, v in asdict(config).items() if k not in NOT_AFFECTING_WEIGHTS}
    job = job or {}
    return {
        "stage": job.get("stage", ""),
        "train": train,
        "window": job.get("window"),
        "student_spec": job.get("student_spec"),
    }


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        data: dict[str, Tensor] | TrainData | StreamData,
        loss_fn: LossFn,
        config: TrainConfig,
        output_dir: str | Path,
        extra_modules: nn.Module | None = None,
        record: dict[str, Any] | None = None,
        job: dict[str, Any] | None = None,
    ) -> None:
        """`model` is what the loss differentiates (stages pass only the trained modules); `job` is the
        stage's whole job (checkpoint_dir, tracking, settings): saved with checkpoints, logged to MLflow."""
        self.dist = init_distributed()
        self.config = config
        self.job = dict(job or {})
        self.output_dir = Path(output_dir)
        self.store = CheckpointStore(self.job.get("checkpoint_dir") or str(self.output_dir))
        self.device = self.dist.device
        self.data: Any = TensorData(data) if isinstance(data, dict) else data
        self.streamed = bool(getattr(self.data, "streamed", False))
        self.loss_fn = loss_fn
        self.record = dict(record or {})
        per_step = config.per_device_batch_size * self.dist.world_size
        if config.batch_size % per_step:
            raise ConfigError(
                f"global batch {config.batch_size} is not a multiple of per-device batch "
                f"{config.per_device_batch_size} x {self.dist.world_size} process(es)"
            )
        self.accumulation = config.batch_size // per_step
        self.steps_per_epoch = self._stream_steps() if self.streamed else len(self.data) // config.batch_size
        n = self.steps_per_epoch * config.batch_size if self.streamed else len(self.data)
        if self.steps_per_epoch == 0:
            if self.streamed:
                raise DataError(
                    f"the corpus gives fewer than one global batch of {config.batch_size} full sequences of "
                    f"{self.data.width} tokens (over {self.dist.world_size} process(es))"
                )
            raise ConfigError(f"{n} examples are fewer than one global batch of {config.batch_size}")
        self.total_steps = self.steps_per_epoch * config.epochs
        self.num_examples = n
        self.identity = {**resume_identity(self.job, config), "data": self.data.fingerprint()}
        distributed.require_same_on_every_rank(self.dist, "job or data", self.identity)
        torch.manual_seed(config.seed)  # before anything random is created (projections, dropout)
        self.model = model.to(self.device)
        self.extra = extra_modules.to(self.device) if extra_modules is not None else None
        trained = [self.model] + ([self.extra] if self.extra is not None else [])
        self.optimizer = torch.optim.AdamW(_param_groups(trained, config.weight_decay), lr=config.lr)
        self.scheduler = linear_schedule(self.optimizer, int(config.warmup_ratio * self.total_steps), self.total_steps)
        self.precision = resolve_amp_here(config.amp, self.device.type, self.dist.local_rank)
        self.amp_dtype = torch_dtype(self.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.wrapped: nn.Module = self.model
        self.wrapped_extra = self.extra
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)
            if self.extra is not None and any(p.requires_grad for p in self.extra.parameters()):
                self.wrapped_extra = DistributedDataParallel(self.extra, device_ids=ids)
        # dropout masks: rank-specific streams (identical masks on every rank would correlate the replicas)
        torch.manual_seed(config.seed + self.dist.rank)
        self.step = 0
        # training seconds of the steps before this run's first, carried in checkpoints; None when resumed
        # from a checkpoint that predates the field, so a total is never a guess
        self.seconds_before: float | None = 0.0
        self._run_started = 0.0  # set by train()
        self._order_cache: tuple[int, Tensor] | None = None

    def _stream_steps(self) -> int:
        """Steps per epoch of a stream: each rank counts its own share (up to the cap), the smallest wins."""
        per_rank_step = self.accumulation * self.config.per_device_batch_size
        cap_steps = self.data.max_sequences // self.config.batch_size
        if self.data.max_sequences and not cap_steps:
            return 0
        own = self.data.count(cap_steps * per_rank_step) // per_rank_step
        return distributed.min_over_ranks(self.dist, own)

    # ----------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> None:
        """Every rank writes its RNG states; rank 0 the shared state, then the commit marker."""
        step = self.step
        if self.dist.is_main:
            self.store.remove(step)  # leftovers of an attempt killed while writing this very step
        distributed.barrier(self.dist)
        rng = {
            "step": step,
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "data": self.data.state() if self.streamed else None,  # this rank's position in its stream
        }
        self.store.write(step, rng_name(self.dist.rank), save_torch(rng))
        if self.dist.is_main:
            state = {
                "step": step,
                "train_seconds": self._seconds_so_far(time.perf_counter() - self._run_started),
                "model": self.model.state_dict(),
                "extra": self.extra.state_dict() if self.extra is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
            }
            self.store.write(step, STATE, save_torch(state))
        distributed.barrier(self.dist)
        if self.dist.is_main:
            meta = {"step": step, "world_size": self.dist.world_size, "identity": self.identity, "job": self.job}
            self.store.write_meta(step, meta)  # the commit: a checkpoint without it does not exist
            self.store.prune(keep=2)

    def maybe_resume(self) -> bool:
        """Load the newest committed checkpoint, after checking it can give the same weights.

        Refused (ConfigError, nothing loaded or written) when the checkpoint was made with other
        settings, other data or another number of processes: each rank's RNG stream belongs to its
        rank, so only the same world size continues the same run.
        """
        steps = self.store.committed_steps() if self.dist.is_main else None
        steps = distributed.broadcast(self.dist, steps)
        if not steps:
            return False
        step = steps[-1]
        where = f"{self.store.location}/checkpoint-{step}"
        meta = self.store.read_meta(step)
        if meta.get("world_size") != self.dist.world_size:
            raise ConfigError(
                f"{where} was written by {meta.get('world_size')} process(es), this run has {self.dist.world_size}: "
                "each process restores its own RNG state, so resume with the same number of processes "
                "(nproc_per_node x nnodes), or start afresh with another checkpoint_dir"
            )
        diff = differences(meta.get("identity", {}), self.identity)
        if diff:
            shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
            raise ConfigError(
                f"{where} belongs to another run ({shown}): resuming it would not give the weights of either. "
                "Use the checkpoint's settings, or another checkpoint_dir"
            )
        if not self.store.has(step, rng_name(self.dist.rank)):
            raise ConfigError(
                f"{where} has no {rng_name(self.dist.rank)}: on several nodes the checkpoint_dir must be shared "
                "storage (an s3:// prefix)"
            )
        state = load_torch(self.store.read(step, STATE))
        rng = load_torch(self.store.read(step, rng_name(self.dist.rank)))
        self.model.load_state_dict(state["model"])
        if self.extra is not None and state["extra"] is not None:
            self.extra.load_state_dict(state["extra"])
        self.optimizer.load_state_dict(state["optimizer"])  # moves the moments onto the parameters' device
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if self.streamed:
            self.data.load_state(rng["data"])
        self.step = state["step"]
        self.seconds_before = state.get("train_seconds")
        return True

    def _seconds_so_far(self, this_run: float) -> float | None:
        """Seconds spent on the steps done so far, over every run; time lost after a kill is not counted."""
        return None if self.seconds_before is None else self.seconds_before + this_run

    # ---------------------------------------------------------------------------------- training

    def _epoch_order(self, epoch: int) -> Tensor:
        """A permutation that depends on (seed, epoch) only, so a resumed run replays it exactly.

        With `group_by_length`, examples are sorted by length within chunks of 32 global batches
        and the batches of the epoch are then shuffled: batches hold similar lengths (less padding
        after trimming) while every epoch still visits every example once in a random batch order.
        """
        if self._order_cache is not None and self._order_cache[0] == epoch:
            return self._order_cache[1]
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        all_lengths = self.data.lengths() if self.config.group_by_length else None
        if all_lengths is not None:
            g = self.config.batch_size
            lengths = torch.as_tensor(all_lengths)[order]
            chunk = 32 * g
            parts = []
            for start in range(0, len(order), chunk):
                piece = order[start : start + chunk]
                parts.append(piece[torch.argsort(lengths[start : start + chunk], descending=True, stable=True)])
            grouped = torch.cat(parts)
            usable = (len(grouped) // g) * g
            batches = grouped[:usable].view(-1, g)
            batches = batches[torch.randperm(len(batches), generator=generator)]
            order = torch.cat([batches.reshape(-1), grouped[usable:]])
        self._order_cache = (epoch, order)
        return order

    def _micro_batches(self, step: int) -> list[Tensor]:
        """Example indices of this process's micro-batches for optimizer step `step`."""
        epoch, index = divmod(step, self.steps_per_epoch)
        order = self._epoch_order(epoch)
        g = self.config.batch_size
        batch = order[index * g : (index + 1) * g]
        b, world, rank = self.config.per_device_batch_size, self.dist.world_size, self.dist.rank
        return [batch[(k * world + rank) * b : (k * world + rank + 1) * b] for k in range(self.accumulation)]

    def _micro_batch_data(self, step: int) -> list[dict[str, Tensor]]:
        """This process's micro-batches for optimizer step `step`, as tensors."""
        if not self.streamed:
            return [self.data.batch(idx) for idx in self._micro_batches(step)]
        epoch, index = divmod(step, self.steps_per_epoch)
        b = self.config.per_device_batch_size
        if self.data.epoch == epoch and self.data.consumed != index * self.accumulation * b:
            raise RuntimeError(
                f"stream at sequence {self.data.consumed}, step {step} needs {index * self.accumulation * b}"
            )
        return [self.data.rows(epoch, b) for _ in range(self.accumulation)]

    def train(self) -> dict[str, Any]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.maybe_resume()
        start_step = self.step
        self.wrapped.train()
        logger = _MlflowLogger(self.job, self.record, self.precision) if self.dist.is_main else None
        bar = progress_bar("train", "step")(self.total_steps) if self.dist.is_main else None
        if bar is not None:
            bar.update(self.step)
        t0 = self._run_started = time.perf_counter()
        terms_sum: dict[str, float] = {}
        first_loss = last_loss = None
        try:
            while self.step < self.total_steps:
                terms = distributed.mean_over_ranks(self.dist, self._optimizer_step())
                first_loss = terms["loss"] if first_loss is None else first_loss
                last_loss = terms["loss"]
                for k, v in terms.items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + v
                self.step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['loss']:.4f}")
                if logger is not None and (self.step % self.config.log_every == 0 or self.step == self.total_steps):
                    elapsed = time.perf_counter() - t0
                    samples = (self.step - start_step) * self.config.batch_size
                    metrics = {**terms, "lr": self.scheduler.get_last_lr()[0], "samples_per_s": samples / elapsed}
                    logger.log(metrics, self.step)
                every = self.config.checkpoint_every
                if every and self.step % every == 0 and self.step < self.total_steps:
                    self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - t0
        trained_steps = self.step - start_step
        summary = {
            "steps": self.total_steps,
            "steps_this_run": trained_steps,
            "resumed_from_step": start_step if resumed else None,
            "examples": self.num_examples,
            "accumulation": self.accumulation,
            "world_size": self.dist.world_size,
            "precision": self.precision,
            "wall_seconds": round(wall, 2),
            # a resumed stage's whole training time (wall_seconds is this run's)
            "wall_seconds_total": None if (total := self._seconds_so_far(wall)) is None else round(total, 2),
            "samples_per_s": round(trained_steps * self.config.batch_size / wall, 2) if wall > 0 else None,
            "mean_terms_this_run": {k: v / max(1, trained_steps) for k, v in terms_sum.items()},
            "first_step_loss": first_loss,
            "last_step_loss": last_loss,
        }
        if logger is not None:
            logger.close(summary)
        return summary

    def _no_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """Accumulating micro-batches skip DDP's all-reduce until the last one (model and projections)."""
        stack = contextlib.ExitStack()
        if not sync:
            for module in (self.wrapped, self.wrapped_extra):
                if hasattr(module, "no_sync"):
                    stack.enter_context(module.no_sync())
        return stack

    def _optimizer_step(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        micro = self._micro_batch_data(self.step)
        autocast = torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )
        for k, data in enumerate(micro):
            batch = {name: t.to(self.device) for name, t in data.items()}
            with self._no_sync(k == len(micro) - 1):
                with autocast:
                    if self.extra is None:
                        terms = self.loss_fn(self.wrapped, batch)
                    else:
                        terms = self.loss_fn(self.wrapped, batch, self.wrapped_extra)
                loss = terms["loss"] / self.accumulation
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / self.accumulation
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return totals


class _MlflowLogger:
    """Rank 0's metrics (all-reduced over the ranks) and the job as params, into the stage's run.

    The run is the job's `mlflow_run_id` (a pipeline step's nested run, opened by the step before it
    started the ranks), so nothing lands in a stray top-level run; without one (a command run by
    hand with MLFLOW_TRACKING_URI set) the trainer opens and closes a run of its own.
    """

    def __init__(self, job: dict[str, Any], record: dict[str, Any], precision: str) -> None:
        import os

        uri = job.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI", "")
        self.active = bool(uri)
        if not self.active:
            return
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        self.run_id = job.get("mlflow_run_id", "")
        self.own_run = not self.run_id
        if self.own_run:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "")
            experiment = self.client.get_experiment_by_name(name) if name else None
            experiment_id = experiment.experiment_id if experiment else "0"
            self.run_id = self.client.create_run(experiment_id, run_name=record.get("stage", "train")).info.run_id
        from mlflow.entities import Param

        values = {k: v for k, v in flatten(job).items() if k not in ("tracking_uri", "mlflow_run_id")}
        values["precision_resolved"] = precision
        params = [Param(k, str(v)[:6000]) for k, v in values.items()]
        for start in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.active:
            return
        if torch.cuda.is_available():
            metrics = {**metrics, "gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30}
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self, summary: dict[str, Any]) -> None:
        if not self.active:
            return
        if self.own_run:
            self.client.set_terminated(self.run_id)


def write_record(output_dir: str | Path, record: dict[str, Any]) -> None:
    Path(output_dir, "training_record.json").write_text(json.dumps(record, indent=2, default=str))
