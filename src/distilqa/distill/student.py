"""Building a student: fewer layers of the teacher, or a fresh model from a (smaller) config.

RECIPE.md leaves the S1 student's initialisation open, so both are offered:
- `teacher-layers`: keep every k-th teacher layer (k = L_t / L_s, layers k, 2k, ..., L_t, 1-based)
  plus the embeddings. These are exactly the teacher layers the uniform map g(m) = m·k pairs with
  student layer m, so the intermediate loss starts from a student that already matches on them.
- `random`: the teacher's config with the student's shape, randomly initialised.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from distilqa.errors import ConfigError

Init = Literal["teacher-layers", "random"]


@dataclass(frozen=True)
class StudentSpec:
    layers: int
    init: Init = "teacher-layers"
    hidden_size: int | None = None  # None: the teacher's
    intermediate_size: int | None = None
    attention_heads: int | None = None

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ConfigError(f"student layers must be positive, got {self.layers}")
        if self.init not in ("teacher-layers", "random"):
            raise ConfigError(f"student init must be teacher-layers or random, got {self.init!r}")
        for name in ("hidden_size", "intermediate_size", "attention_heads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"student {name} must be positive, got {value}")

    def reshapes(self) -> bool:
        return any(v is not None for v in (self.hidden_size, self.intermediate_size, self.attention_heads))


def _layer_list(model: Any) -> Any:
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise ConfigError(f"{type(model).__name__}: no encoder.layer list to take layers from")
    return encoder


def kept_teacher_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """1-based teacher layers a `teacher-layers` student keeps: k, 2k, ..., L_t."""
    if student_layers > teacher_layers or teacher_layers % student_layers:
        raise ConfigError(
            f"a student of {student_layers} layers cannot take every k-th of {teacher_layers} teacher layers "
            "(the teacher's layer count must be a multiple of the student's)"
        )
    k = teacher_layers // student_layers
    return [k * m for m in range(1, student_layers + 1)]


def build_student(teacher: Any, spec: StudentSpec, seed: int = 42) -> Any:
    """A new model of the teacher's class (same head type), shaped and initialised by `spec`."""
    config = copy.deepcopy(teacher.config)
    if spec.init == "teacher-layers":
        if spec.reshapes():
            raise ConfigError(
                "a teacher-layers student keeps the teacher's widths: drop the width options or use random"
            )
        keep = kept_teacher_layers(config.num_hidden_layers, spec.layers)
        student = copy.deepcopy(teacher)
        encoder = _layer_list(student)
        import torch

        encoder.layer = torch.nn.ModuleList([encoder.layer[i - 1] for i in keep])
        for new_index, layer in enumerate(encoder.layer):  # layer indices feed caches/masks in some models
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_index
        student.config.num_hidden_layers = spec.layers
        return student
    config.num_hidden_layers = spec.layers
    if spec.hidden_size is not None:
        config.hidden_size = spec.hidden_size
    if spec.intermediate_size is not None:
        config.intermediate_size = spec.intermediate_size
    if spec.attention_heads is not None:
        config.num_attention_heads = spec.attention_heads
    if config.hidden_size % config.num_attention_heads:
        raise ConfigError(
            f"student hidden size {config.hidden_size} is not a multiple of its {config.num_attention_heads} heads"
        )
    import torch

    torch.manual_seed(seed)
    return type(teacher)(config)
