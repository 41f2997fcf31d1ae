"""What a served model is configured with (no kserve import here: the CLI builds it before starting)."""

from __future__ import annotations

from dataclasses import dataclass, field

from distilqa.serving.batching import BatchingConfig
from distilqa.serving.requests import Limits

from distilqa.decode import DecodeConfig
from distilqa.windows import WindowConfig


@dataclass(frozen=True)
class ServeSettings:
    window: WindowConfig = field(default_factory=WindowConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: Limits = field(default_factory=Limits)
    windows_per_forward: int = 32
    price_per_second: float = 0.0  # what a second of compute costs, reported per response
    precision: str = "auto"  # see distilqa.inference.resolve_precision
