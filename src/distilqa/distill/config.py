"""Every training setting, defined once: the trainer's hyperparameters, each stage's options, a job.

The CLI's `finetune` / `distill` flags, the profiles' training sections and the pipeline's
parameters are all derived from these classes (`distilqa.settings`), so a default or a help text
lives here and nowhere else. A `StageJob` is everything one stage needs, written to a YAML file
and run by `distilqa train JOB.yaml` (or `torchrun ... -m distilqa.train JOB.yaml`), whether on
one CPU process, N local processes (gloo) or N GPUs on M nodes (NCCL): the local path and the
cluster path are the same path. The job is also saved with each checkpoint and logged to MLflow.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from distilqa.distill.student import StudentSpec
from distilqa.errors import ConfigError
from distilqa.settings import coerce, from_mapping, positive_ints
from distilqa.windows import WindowConfig

Amp = Literal["auto", "fp32", "fp16", "bf16"]
AttentionTarget = Literal["scores", "probabilities", "none"]
Stage = Literal["finetune", "general", "intermediate", "teacher_logits", "prediction"]
STAGES: tuple[str, ...] = ("finetune", "general", "intermediate", "teacher_logits", "prediction")


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the shared training loop (names as in the recipe)."""

    epochs: int = _help("passes over the training features", 2)
    lr: float = _help("peak learning rate (AdamW)", 3e-5)
    batch_size: int = _help("global batch per optimizer step, over every process, reached by accumulation", 32)
    per_device_batch_size: int = _help("examples per forward pass on one process", 8)
    warmup_ratio: float = _help("share of the steps with linear warmup, then linear decay", 0.2)
    weight_decay: float = _help("AdamW weight decay (not on biases and LayerNorm weights)", 0.01)
    max_grad_norm: float = _help("gradient clipping norm", 1.0)
    seed: int = _help("seed of the data order, initialisation and dropout", 42)
    amp: Amp = _help(
        "precision: auto = fp16 + GradScaler below compute capability 8.0 (V100, T4), bf16 from 8.0; on a CPU "
        "bf16 where it is native (AMX, AVX-512 BF16), else fp32",
        "auto",
    )
    group_by_length: bool = _help(
        "batches of similar lengths (less padding); every epoch still sees every example", True
    )
    checkpoint_every: int = _help("optimizer steps between checkpoints (0: none)", 0)
    log_every: int = _help("optimizer steps between logged metrics", 10)

    def __post_init__(self) -> None:
        positive_ints(self, "epochs", "batch_size", "per_device_batch_size", "log_every")
        if isinstance(self.lr, bool) or not self.lr > 0 or not math.isfinite(self.lr):
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be within [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0 or not self.max_grad_norm > 0:
            raise ConfigError("weight_decay must be >= 0 and max_grad_norm > 0")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every!r}")
        if self.amp not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"amp must be auto, fp32, fp16 or bf16, got {self.amp!r}")


# settings a resumed run may change without changing a single weight
NOT_AFFECTING_WEIGHTS = ("checkpoint_every", "log_every")


@dataclass(frozen=True)
class IntermediateConfig(TrainConfig):
    """S2a (and S1): TinyBERT's hidden-state and attention MSE through the uniform layer map."""

    attention_target: AttentionTarget = _help(
        "scores: pre-softmax attention (the paper); probabilities (Haystack); none: hidden states only "
        "(teachers with another head count)",
        "scores",
    )
    hidden_padding: bool = _help("include padded positions in the hidden-state MSE", False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention_target not in ("scores", "probabilities", "none"):
            raise ConfigError(f"attention_target must be scores, probabilities or none, got {self.attention_target!r}")


@dataclass(frozen=True)
class GeneralConfig(IntermediateConfig):
    """S1: the S2a loss on plain text, streamed and packed into full sequences."""

    corpus: str = _help(
        'shards of .txt/.txt.gz (a document per line) or .jsonl/.jsonl.zst (a JSON object per line, its "text"):'
        " a file, a directory or an s3:// prefix",
        "",
    )
    max_seq_len: int = _help("tokens per packed sequence", 384)
    max_sequences: int = _help(
        "sequences per epoch, over every process (0: the whole corpus, counted by a first pass over it)", 0
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.max_seq_len, int) or not 8 <= self.max_seq_len <= 512:
            raise ConfigError(f"max_seq_len must be within [8, 512], got {self.max_seq_len!r}")
        if not isinstance(self.max_sequences, int) or self.max_sequences < 0:
            raise ConfigError(f"max_sequences must be >= 0, got {self.max_sequences!r}")


TeacherPrecision = Literal["fp32", "bf16", "fp16", "auto"]


@dataclass(frozen=True)
class PredictionConfig(TrainConfig):
    """S2b: soft targets from a large teacher's cached logits, plus the hard labels."""

    temperature: float = _help("softmax temperature T of the soft targets", 1.5)
    distillation_weight: float = _help("w: loss = w*T^2*(KL_start+KL_end) + (1-w)*(CE_start+CE_end)/2", 0.75)
    teacher_precision: TeacherPrecision = _help(
        "precision of the teacher's forward when its logits are computed (stored fp32 either way); part of the "
        "cache key. auto: the fastest native one",
        "fp32",
    )
    logits_batch_size: int = _help("features per teacher forward when filling the logit cache", 32)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.temperature, bool) or not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.distillation_weight <= 1.0:
            raise ConfigError(f"distillation_weight must be within [0, 1], got {self.distillation_weight!r}")
        if self.teacher_precision not in ("fp32", "bf16", "fp16", "auto"):
            raise ConfigError(f"teacher_precision must be fp32, bf16, fp16 or auto, got {self.teacher_precision!r}")
        positive_ints(self, "logits_batch_size")


STAGE_SETTINGS: dict[str, type[TrainConfig]] = {
    "finetune": TrainConfig,
    "general": GeneralConfig,
    "intermediate": IntermediateConfig,
    "teacher_logits": PredictionConfig,  # the logits S2b reads: its teacher_precision and logits_batch_size
    "prediction": PredictionConfig,
}


_NEEDS = {
    "finetune": ("model",),
    "general": ("teacher",),
    "intermediate": ("teacher", "student"),
    "teacher_logits": ("teacher", "student"),
    "prediction": ("teacher", "student"),
}


@dataclass(frozen=True)
class StageJob:
    """One training stage, complete: what `distilqa train JOB.yaml` runs on every rank."""

    stage: Stage
    train_data: str  # SQuAD JSON (general: the text corpus), local, .gz, https:// or s3://
    output_dir: str
    train: TrainConfig = field(default_factory=TrainConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: str = ""  # finetune: the model to fine-tune
    teacher: str = ""
    student: str = ""  # intermediate / prediction / teacher_logits: the student (its tokenizer and ids)
    student_spec: StudentSpec | None = None  # general: how the student is built from the teacher
    logits_cache: str = ""  # teacher_logits / prediction: the cache directory ("" = $DISTILQA_CACHE)
    # SQuAD stages: the Arrow feature cache ("" = $DISTILQA_CACHE/features)
    features_cache: str = ""
    features_num_proc: int = 1  # processes that tokenize a feature cache (local rank 0 builds it)
    checkpoint_dir: str = ""  # local path or s3:// prefix; "" = the output directory
    tracking_uri: str = ""  # MLflow; "" = MLFLOW_TRACKING_URI
    mlflow_run_id: str = ""  # the stage's run (a pipeline's nested run); "" = a new run

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        expected = STAGE_SETTINGS[self.stage]
        if type(self.train) is not expected:
            raise ConfigError(f"stage {self.stage} takes {expected.__name__} settings, got {type(self.train).__name__}")
        missing = [name for name in _NEEDS[self.stage] if not getattr(self, name)]
        if missing:
            raise ConfigError(f"stage {self.stage} needs {' and '.join(missing)}")
        if not self.train_data or not self.output_dir:
            raise ConfigError("a job needs train_data and output_dir")
        positive_ints(self, "features_num_proc")
        if self.stage == "general" and self.student_spec is None:
            raise ConfigError("stage general needs student_spec (the student's layers and init)")

    @property
    def checkpoints(self) -> str:
        return self.checkpoint_dir or self.output_dir

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        import yaml

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def from_dict(cls, values: Any, where: str = "job") -> StageJob:
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a mapping of settings")
        stage = values.get("stage")
        if stage not in STAGES:
            raise ConfigError(f"{where}.stage must be one of {', '.join(STAGES)}, got {stage!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(sorted(known))})")
        rest = {k: v for k, v in values.items() if k not in ("train", "window", "student_spec")}
        kinds = {f.name: int if f.type == "int" else str for f in fields(cls)}
        for key, value in rest.items():
            if key != "stage":
                rest[key] = coerce(f"{where}.{key}", value, kinds[key])
        try:
            return cls(
                **rest,
                train=from_mapping(STAGE_SETTINGS[stage], values.get("train"), f"{where}.train"),
                window=from_mapping(WindowConfig, values.get("window"), f"{where}.window"),
                student_spec=None
                if values.get("student_spec") is None
                else from_mapping(StudentSpec, values["student_spec"], f"{where}.student_spec"),
            )
        except ConfigError as exc:
            raise ConfigError(str(exc) if where in str(exc) else f"{where}: {exc}") from None

    @classmethod
    def read(cls, path: str | Path) -> StageJob:
        import yaml

        from distilqa.storage import read_bytes

        raw = read_bytes(str(path))
        try:
            values = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(values, where=str(path))
