"""Profiles: the pipeline's configuration as data (pipelines/profiles/*.yaml), validated once here.

A profile has one section per concern (data, models, window, the four training stages, augment,
gate, registry, deploy, resources). `load_profile(name, overrides)` reads the YAML, applies
`--set section.key=value` overrides (values parsed as YAML scalars), rejects unknown keys and bad
values with the key's dotted name, and returns a typed `Profile`. Each section becomes one
pipeline parameter (a JSON object), so every hyperparameter can be changed at submit time; the
components rebuild the same typed sections from it, so a submitted override is validated too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from distilqa.distill.config import GeneralConfig, IntermediateConfig, PredictionConfig, TrainConfig
from distilqa.errors import ConfigError
from distilqa.settings import from_mapping
from distilqa.windows import WindowConfig

PROFILE_DIR = Path(__file__).parent / "profiles"


def _positive(where: str, **values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
            raise ConfigError(f"{where}.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class Data:
    train: str = "builtin:dev"  # builtin:dev = the shipped SQuAD 2.0 dev set; else a path, https:// or s3://
    dev: str = "builtin:dev"
    train_articles: str = ""  # "start:stop" (0-based, stop exclusive) to take a slice of the articles
    dev_articles: str = ""
    max_train_questions: int = 0  # 0 = all

    def check(self, where: str) -> None:
        for name in ("train_articles", "dev_articles"):
            if getattr(self, name):
                article_range(getattr(self, name), f"{where}.{name}")
        if self.max_train_questions < 0:
            raise ConfigError(f"{where}.max_train_questions must be >= 0")


def article_range(text: str, where: str) -> tuple[int, int]:
    try:
        start, stop = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f'{where} must look like "start:stop", got {text!r}') from None
    if not 0 <= start < stop:
        raise ConfigError(f"{where}: need 0 <= start < stop, got {text!r}")
    return start, stop


@dataclass(frozen=True)
class Models:
    general_teacher: str = ""  # S1 teacher: a base LM (roberta-base)
    intermediate_teacher: str = ""  # S2a teacher (roberta-base-squad2)
    intermediate_teacher_is_base_lm: bool = False  # fine-tune it on the train set first
    prediction_teacher: str = ""  # S2b teacher (roberta-large-squad2)
    prediction_teacher_is_base_lm: bool = False
    student_backbone: str = ""  # a ready S1 output: skips general distillation
    student_layers: int = 6
    student_init: str = "teacher-layers"

    def check(self, where: str) -> None:
        for name in ("intermediate_teacher", "prediction_teacher"):
            if not getattr(self, name):
                raise ConfigError(f"{where}.{name} is required (a directory, s3:// prefix or hub id)")
        if not self.student_backbone and not self.general_teacher:
            raise ConfigError(f"{where}: give general_teacher (to run S1) or student_backbone (to skip it)")
        from distilqa.distill.student import StudentSpec

        try:
            StudentSpec(self.student_layers, self.student_init)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Augment:
    shards: int = 4
    factor: int = 20
    replace_prob: float = 0.4
    candidates: int = 15
    mlm_model: str = ""  # masked LM for candidates ("" = the intermediate teacher's tokenizer-compatible MLM)
    seed: int = 42

    def check(self, where: str) -> None:
        _positive(where, shards=self.shards, factor=self.factor, candidates=self.candidates)
        if not 0.0 <= self.replace_prob <= 1.0:
            raise ConfigError(f"{where}.replace_prob must be within [0, 1], got {self.replace_prob}")
        if self.shards > 256:
            raise ConfigError(f"{where}.shards must be at most 256, got {self.shards}")


@dataclass(frozen=True)
class Gate:
    min_f1: float = 0.0
    champion_tolerance: float = 1.0  # F1 points the challenger may lose against the champion
    p95_latency_ms: float = 1000.0  # single-question latency budget, measured on the evaluation machine
    latency_questions: int = 50

    def check(self, where: str) -> None:
        if not 0.0 <= self.min_f1 <= 100.0:
            raise ConfigError(f"{where}.min_f1 must be within [0, 100], got {self.min_f1}")
        if self.champion_tolerance < 0:
            raise ConfigError(f"{where}.champion_tolerance must be >= 0")
        _positive(where, p95_latency_ms=self.p95_latency_ms, latency_questions=self.latency_questions)


@dataclass(frozen=True)
class Registry:
    model_name: str = "tinyroberta-squad2"
    tracking_uri: str = ""  # "" = MLFLOW_TRACKING_URI, else sqlite:///<output dir>/mlflow.db
    experiment: str = "distilqa"

    def check(self, where: str) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.model_name):
            raise ConfigError(f"{where}.model_name must be letters, digits, '.', '_' or '-', got {self.model_name!r}")


@dataclass(frozen=True)
class Deploy:
    """How the deploy step rolls a registered version out (docs/runbook.md, "The rollout")."""

    mode: str = "local"  # local: predictor on loopback; cluster: KServe InferenceService (Standard mode)
    namespace: str = "distilqa"
    service_name: str = "tinyroberta-squad2"
    # traffic percent of the canary at each step; the last must be 100 (promotion): 10,100 or 10,50,100
    canary_steps: tuple[int, ...] = (10, 100)
    probe_questions: int = 20
    probe_timeout_s: float = 30.0  # one probe request; a canary slower than this is rolled back
    max_error_rate: float = 0.01  # share of the canary's requests answered 5xx while a step lasts
    bake_s: float = 0.0  # how long each canary step stays under live traffic before its checks
    poll_s: float = 2.0  # how often the InferenceService status is read while waiting
    service_account: str = "distilqa-serving"
    ready_timeout_s: int = 600
    artifacts_destination: str = "s3://distilqa-mlflow/artifacts"  # mlflow-artifacts:/ maps here (for storageUri)
    precision: str = "fp32"  # evaluation and serving use the same, so the probe can demand equal answers

    def check(self, where: str) -> None:
        if self.precision not in ("fp32", "bf16", "int8"):
            raise ConfigError(f"{where}.precision must be fp32, bf16 or int8, got {self.precision!r}")
        if self.mode not in ("local", "cluster"):
            raise ConfigError(f"{where}.mode must be local or cluster, got {self.mode!r}")
        steps = self.canary_steps
        if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
            raise ConfigError(
                f"{where}.canary_steps must rise strictly within 1..100 and end at 100 (promotion), got {list(steps)}"
            )
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"{where}.max_error_rate must be within [0, 1], got {self.max_error_rate}")
        if self.bake_s < 0:
            raise ConfigError(f"{where}.bake_s must be >= 0, got {self.bake_s}")
        _positive(
            where,
            probe_questions=self.probe_questions,
            probe_timeout_s=self.probe_timeout_s,
            poll_s=self.poll_s,
            ready_timeout_s=self.ready_timeout_s,
        )


@dataclass(frozen=True)
class Resources:
    training_image: str = "ghcr.io/distilqa/distilqa-train:0.1.0"
    serving_image: str = "ghcr.io/distilqa/distilqa-serve:0.1.0"
    cpu_image: str = (
        "ghcr.io/distilqa/distilqa-cpu:0.1.0"  # CPU steps: no CUDA layers to pull (components/Dockerfile.cpu)
    )
    gpus: int = 4
    accelerator: str = "nvidia.com/gpu"
    gpu_node_selector: str = "distilqa.io/pool=gpu-v100"  # label=value of the GPU node pool
    cpu_request: str = "8"
    memory_request: str = "60Gi"
    shm_size: str = "16Gi"
    retries: int = 2
    # processes per training step (torchrun --nproc-per-node): 0 = one per GPU of the step, 1 without GPUs
    nproc_per_node: int = 0
    # durable checkpoints: each run's training steps write under <root>/<KFP run id>/<step>, so a retried
    # pod resumes; "" = inside the step's output (lost with the pod)
    checkpoint_root: str = ""
    # the SQuAD stages' Arrow feature cache, shared by every step, retry and node of every run (an s3://
    # prefix): tokenized once per data version; "" = each pod's own $DISTILQA_CACHE/features
    features_root: str = ""
    # augmentation shards: GPUs each (of the training pool); 0 = a CPU pod with the requests below
    augment_gpus: int = 1
    augment_cpu_request: str = "8"
    augment_memory_request: str = "16Gi"
    s3_secret: str = "distilqa-s3"
    mlflow_secret: str = "distilqa-mlflow"

    def check(self, where: str) -> None:
        for name in ("gpus", "retries", "nproc_per_node", "augment_gpus"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")
        if self.gpus and self.nproc_per_node > self.gpus:
            raise ConfigError(f"{where}.nproc_per_node ({self.nproc_per_node}) exceeds the step's {self.gpus} GPUs")
        if self.gpu_node_selector and "=" not in self.gpu_node_selector:
            raise ConfigError(f"{where}.gpu_node_selector must be label=value, got {self.gpu_node_selector!r}")
        if "/" in self.accelerator and self.accelerator.upper().startswith("NVIDIA_"):
            raise ConfigError(f"{where}.accelerator: use a resource name like nvidia.com/gpu")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    data: Data = field(default_factory=Data)
    models: Models = field(default_factory=Models)
    window: WindowConfig = field(default_factory=WindowConfig)
    augment: Augment = field(default_factory=Augment)
    # the training stages' sections are the library's settings classes: the same names, defaults and
    # checks as `distilqa finetune` / `distill` flags and the job files the steps run
    teacher_finetune: TrainConfig = field(default_factory=TrainConfig)
    general: GeneralConfig = field(default_factory=GeneralConfig)
    intermediate: IntermediateConfig = field(default_factory=IntermediateConfig)
    prediction: PredictionConfig = field(default_factory=PredictionConfig)
    gate: Gate = field(default_factory=Gate)
    registry: Registry = field(default_factory=Registry)
    deploy: Deploy = field(default_factory=Deploy)
    resources: Resources = field(default_factory=Resources)

    def sections(self) -> dict[str, dict[str, Any]]:
        """The pipeline's parameters: one JSON object per section (tuples become lists, as JSON has them)."""
        import json

        sections = {
            f.name: asdict(getattr(self, f.name)) for f in fields(self) if f.name not in ("name", "description")
        }
        return json.loads(json.dumps(sections))


_TYPES = {f.name: type(f.default_factory()) for f in fields(Profile) if f.name not in ("name", "description")}  # type: ignore[misc]


def build_section(name: str, values: dict[str, Any]) -> Any:
    """A typed, checked section from plain values (the YAML, or a pipeline parameter in a component)."""
    section = from_mapping(_TYPES[name], values, name)
    check = getattr(section, "check", None)
    if check is not None:
        check(name)
    return section


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        if section not in _TYPES:
            raise ConfigError(f"unknown section {section!r} in --set {item!r} (known: {', '.join(_TYPES)})")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str, overrides: list[str] | None = None) -> Profile:
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown profile {name_or_path!r} (known: {', '.join(available_profiles())})")
    elif not path.is_file():
        raise ConfigError(f"{name_or_path}: no such profile file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile is a mapping of sections")
    meta = {k: raw.pop(k) for k in ("name", "description") if k in raw}
    for section, values in parse_overrides(overrides or []).items():
        raw[section] = {**(raw.get(section) or {}), **values}
    unknown = sorted(set(raw) - set(_TYPES))
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r} (known: {', '.join(_TYPES)})")
    built = {}
    for section in _TYPES:
        values = raw.get(section) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: section {section} must be a mapping")
        built[section] = build_section(section, values)
    profile = Profile(name=str(meta.get("name", path.stem)), description=str(meta.get("description", "")), **built)
    _check_across(profile)
    return profile


def _check_across(p: Profile) -> None:
    if p.general.max_seq_len > 512 or p.window.max_seq_len > 512:
        raise ConfigError("max_seq_len above 512 does not fit RoBERTa/BERT position embeddings")


def replace_section(profile: Profile, section: str, **values: Any) -> Profile:
    return dataclasses.replace(profile, **{section: dataclasses.replace(getattr(profile, section), **values)})
