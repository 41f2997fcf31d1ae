"""Typed settings: one dataclass per concern, from which CLI flags, YAML sections and job files derive.

A settings class is a frozen dataclass whose fields carry their help text in
`field(metadata={"help": ...})` (as transformers' HfArgumentParser dataclasses do) and whose
`__post_init__` raises `ConfigError` for bad values. This module turns such a class into argparse
flags and back, and builds it from plain values (a YAML section, a KFP dict parameter, a job file)
with the coercions those sources need, naming the dotted key of anything wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from typing import Any, TypeVar, get_args, get_origin

from distilqa.errors import ConfigError

T = TypeVar("T")


def help_of(field: dataclasses.Field) -> str:
    return str(field.metadata.get("help", ""))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(annotation: Any) -> tuple[Any, tuple[str, ...] | None]:
    """(int | float | str | bool | a dataclass, the Literal's choices or None)."""
    origin = get_origin(annotation)
    if origin is typing.Literal:
        choices = get_args(annotation)
        return type(choices[0]), tuple(str(c) for c in choices)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return annotation, None


def add_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    exclude: set[str] | frozenset[str] = frozenset(),
    seen: set[str] | None = None,
) -> None:
    """One `--kebab-name` flag per field, typed and documented by the field; defaults from the class.

    `seen` collects the field names added so far, so classes sharing fields (S1's and S2a's settings)
    can be offered on one parser without duplicates.
    """
    seen = set() if seen is None else seen
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or f.name in seen or not f.init:
            continue
        kind, choices = _base_type(types[f.name])
        if dataclasses.is_dataclass(kind):
            continue
        seen.add(f.name)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        text = help_of(f)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
            continue
        shown = f" (default {default})" if default not in (None, "") else ""
        metavar = None if choices else f.name.upper()
        parser.add_argument(flag, type=kind, default=default, choices=choices, metavar=metavar, help=text + shown)


def from_namespace(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """The settings object from parsed flags (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def from_mapping(cls: type[T], values: Any, where: str) -> T:
    """Build `cls` from plain values, rejecting unknown keys and wrong types by dotted name."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(sorted(known))})")
    types = _field_types(cls)
    coerced = {}
    for key, value in values.items():
        kind, choices = _base_type(types[key])
        name = f"{where}.{key}"
        if dataclasses.is_dataclass(kind):
            coerced[key] = from_mapping(kind, value, name)
            continue
        if value is None and _optional(types[key]):
            coerced[key] = None
            continue
        coerced[key] = coerce(name, value, kind)
        if choices is not None and str(coerced[key]) not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    try:
        return cls(**coerced)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _optional(annotation: Any) -> bool:
    return type(None) in get_args(annotation)


def to_mapping(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def coerce(where: str, value: Any, kind: type) -> Any:
    """A value of `kind` from YAML, JSON or KFP (which passes numbers and booleans in dicts as text)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if value in ("true", "false", "True", "False"):
            return value.lower() == "true"
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind in (int, float) and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if kind is int:
        if isinstance(value, float) and value.is_integer():  # JSON numbers through KFP come back as floats
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if get_origin(kind) is tuple:
        return _int_tuple(where, value)
    return value


def _int_tuple(where: str, value: Any) -> tuple[int, ...]:
    """A list of integers from YAML (`[10, 100]`), JSON through KFP, `--set` text (`10,50,100`) or one int."""
    if isinstance(value, str):
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    elif not isinstance(value, list | tuple):
        value = [value]
    return tuple(coerce(f"{where}[{i}]", v, int) for i, v in enumerate(value))


def positive_ints(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (`train.lr`): MLflow params, messages naming a setting."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
