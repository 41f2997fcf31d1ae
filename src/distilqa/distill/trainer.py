"""One training loop for every stage: fine-tuning, S1, S2a, S2b.

A stage gives a model, a dataset of tensors and a loss function; the trainer owns everything a
long GPU job needs: AdamW with weight decay (no decay on biases and LayerNorm weights), linear
warmup by proportion then linear decay, gradient clipping, gradient accumulation up to a fixed
global batch from any per-device batch and any number of processes, seeds, AMP, DDP under torchrun
(gloo on CPU, nccl on GPU), and checkpoints that resume exactly: model, optimizer, scheduler, RNG
states and data position, so a run killed at any moment ends with the same weights as one that was
not.

Data order: in epoch e, a permutation seeded by (seed, e) is cut into global batches of
`global_batch_size` examples (a last incomplete batch is dropped); a global batch is split into
`world_size x accumulation` micro-batches, so the update does not depend on how many processes or
how much accumulation produced it.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distilqa.errors import ConfigError
from distilqa.progress import progress_bar

# loss_fn(model, batch) -> {"loss": ..., other terms}; with extra_modules: loss_fn(model, batch, extra)
LossFn = Callable[..., dict[str, Tensor]]
CHECKPOINT_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    learning_rate: float = 3e-5
    global_batch_size: int = 32
    per_device_batch_size: int = 8
    warmup_ratio: float = 0.2
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    amp: str = "auto"  # auto: fp16 on GPUs without bf16 (V100), bf16 on newer GPUs, fp32 on CPU
    checkpoint_every: int = 0  # optimizer steps; 0 = none besides the final model
    log_every: int = 10
    group_by_length: bool = False  # batches of similar lengths: less padding, same examples per epoch

    def __post_init__(self) -> None:
        positive = ("epochs", "global_batch_size", "per_device_batch_size", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be within [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ConfigError("weight_decay must be >= 0 and max_grad_norm > 0")
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.amp not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"amp must be auto, fp32, fp16 or bf16, got {self.amp!r}")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        # CPU: fp32 unless bf16 is asked for explicitly (fast on CPUs with AVX-512 BF16 / AMX)
        return torch.bfloat16 if amp == "bf16" else None
    if amp == "fp32":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]


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


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        data: dict[str, Tensor],
        loss_fn: LossFn,
        config: TrainConfig,
        output_dir: str | Path,
        extra_modules: nn.Module | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        self.dist = init_distributed()
        self.config = config
        self.output_dir = Path(output_dir)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        self.data = data
        self.loss_fn = loss_fn
        self.record = dict(record or {})
        n = len(next(iter(data.values())))
        if any(len(t) != n for t in data.values()):
            raise ConfigError("every data tensor must have the same first dimension")
        per_step = config.per_device_batch_size * self.dist.world_size
        if config.global_batch_size % per_step:
            raise ConfigError(
                f"global batch {config.global_batch_size} is not a multiple of per-device batch "
                f"{config.per_device_batch_size} x {self.dist.world_size} process(es)"
            )
        self.accumulation = config.global_batch_size // per_step
        self.steps_per_epoch = n // config.global_batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"{n} examples are fewer than one global batch of {config.global_batch_size}")
        self.total_steps = self.steps_per_epoch * config.epochs
        self.num_examples = n
        torch.manual_seed(config.seed)  # before anything random is created (projections, dropout)
        self.model = model.to(self.device)
        self.extra = extra_modules.to(self.device) if extra_modules is not None else None
        trained = [self.model] + ([self.extra] if self.extra is not None else [])
        self.optimizer = torch.optim.AdamW(_param_groups(trained, config.weight_decay), lr=config.learning_rate)
        self.scheduler = linear_schedule(self.optimizer, int(config.warmup_ratio * self.total_steps), self.total_steps)
        self.amp_dtype = _amp_dtype(config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.wrapped: nn.Module = self.model
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.model, device_ids=ids)
            if self.extra is not None and any(p.requires_grad for p in self.extra.parameters()):
                self.extra = DistributedDataParallel(self.extra, device_ids=ids)
        self.step = 0
        # training seconds of the steps before this run's first, carried in checkpoints; None when resumed
        # from a checkpoint that predates the field, so a total is never a guess
        self.seconds_before: float | None = 0.0
        self._run_started = 0.0  # set by train()

    # ----------------------------------------------------------------------------- checkpoints

    def _checkpoint_dirs(self) -> list[Path]:
        found = [p for p in self.output_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / "state.pt").is_file()]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))

    def save_checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        target = self.output_dir / f"{CHECKPOINT_PREFIX}{self.step}"
        tmp = self.output_dir / f".{target.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {
            "step": self.step,
            "train_seconds": self._seconds_so_far(time.perf_counter() - self._run_started),
            "model": self.model.state_dict(),
            "extra": _unwrap(self.extra).state_dict() if self.extra is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },  # fmt: skip
        }
        torch.save(state, tmp / "state.pt")
        tmp.replace(target)  # a checkpoint exists whole or not at all
        for old in self._checkpoint_dirs()[:-2]:  # keep the last two
            shutil.rmtree(old, ignore_errors=True)

    def maybe_resume(self) -> bool:
        checkpoints = self._checkpoint_dirs()
        if not checkpoints:
            return False
        state = torch.load(checkpoints[-1] / "state.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        if self.extra is not None and state["extra"] is not None:
            _unwrap(self.extra).load_state_dict(state["extra"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
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
        cached = getattr(self, "_order_cache", None)
        if cached is not None and cached[0] == epoch:
            return cached[1]
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        if self.config.group_by_length and "attention_mask" in self.data:
            g = self.config.global_batch_size
            lengths = self.data["attention_mask"].sum(dim=1)[order]
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
        g = self.config.global_batch_size
        batch = order[index * g : (index + 1) * g]
        b = self.config.per_device_batch_size
        return [
            batch[(k * self.dist.world_size + self.dist.rank) * b : (k * self.dist.world_size + self.dist.rank + 1) * b]
            for k in range(self.accumulation)
        ]

    def train(self) -> dict[str, Any]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.maybe_resume()
        start_step = self.step
        self.wrapped.train()
        logger = _MlflowLogger(self.config, self.record) if self.dist.is_main else None
        bar = progress_bar("train", "step")(self.total_steps) if self.dist.is_main else None
        if bar is not None:
            bar.update(self.step)
        t0 = self._run_started = time.perf_counter()
        terms_sum: dict[str, float] = {}
        first_loss = last_loss = None
        while self.step < self.total_steps:
            terms = self._optimizer_step()
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
                samples = (self.step - start_step) * self.config.global_batch_size
                logger.log(
                    {**terms, "lr": self.scheduler.get_last_lr()[0], "samples_per_s": samples / elapsed}, self.step
                )
            if (
                self.config.checkpoint_every
                and self.step % self.config.checkpoint_every == 0
                and self.step < self.total_steps
            ):
                self.save_checkpoint()
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
            "wall_seconds": round(wall, 2),
            # a resumed stage's whole training time (wall_seconds is this run's)
            "wall_seconds_total": None if (total := self._seconds_so_far(wall)) is None else round(total, 2),
            "samples_per_s": round(trained_steps * self.config.global_batch_size / wall, 2) if wall > 0 else None,
            "mean_terms_this_run": {k: v / max(1, trained_steps) for k, v in terms_sum.items()},
            "first_step_loss": first_loss,
            "last_step_loss": last_loss,
        }
        if logger is not None:
            logger.close()
        return summary

    def _optimizer_step(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        micro = self._micro_batches(self.step)
        for k, idx in enumerate(micro):
            batch = {name: t[idx].to(self.device) for name, t in self.data.items()}
            sync = k == len(micro) - 1
            context = self.wrapped.no_sync() if (self.dist.world_size > 1 and not sync) else _null()
            with (
                context,
                torch.autocast(
                    self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
                ),
            ):
                if self.extra is None:
                    terms = self.loss_fn(self.wrapped, batch)
                else:
                    terms = self.loss_fn(self.wrapped, batch, self.extra)
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


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module)


class _MlflowLogger:
    """Logs every loss term, lr and throughput to MLflow when MLFLOW_TRACKING_URI is set."""

    def __init__(self, config: TrainConfig, record: dict[str, Any]) -> None:
        self.active = bool(os.environ.get("MLFLOW_TRACKING_URI"))
        if not self.active:
            return
        import mlflow

        self.mlflow = mlflow
        self.own_run = mlflow.active_run() is None
        if self.own_run:
            mlflow.start_run(run_name=record.get("stage", "train"))
        mlflow.log_params({f"train.{k}": v for k, v in asdict(config).items()})

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            if torch.cuda.is_available():
                metrics = {**metrics, "gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30}
            self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        if self.active and self.own_run:
            self.mlflow.end_run()


def write_record(output_dir: str | Path, record: dict[str, Any]) -> None:
    Path(output_dir, "training_record.json").write_text(json.dumps(record, indent=2, default=str))
