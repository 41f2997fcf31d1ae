"""The MLflow model registry as distilqa uses it: versions with provenance tags, aliases
`challenger` (set at registration) and `champion` (moved by deploy, promote and rollback).

Stages are deprecated in MLflow 3; aliases and version tags carry the same information.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from distilqa.errors import ConfigError, ModelError

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"


def client(tracking_uri: str = "") -> Any:
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise ConfigError("no MLflow tracking URI: set MLFLOW_TRACKING_URI or pass --tracking-uri")
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def version_by_alias(c: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_f1(c: Any, name: str) -> float | None:
    version = version_by_alias(c, name, CHAMPION)
    if version is None or "f1" not in version.tags:
        return None
    return float(version.tags["f1"])


def register(
    c: Any,
    name: str,
    model_dir: str,
    window: dict[str, Any],
    precision: str,
    tags: dict[str, str],
    artifacts: dict[str, str],
    parent_run_id: str = "",
) -> str:
    """Log the model as a pyfunc in a run (nested under the pipeline run) and register it; returns the version."""
    import tempfile

    import mlflow

    from distilqa.serving.pyfunc import ExtractiveQAModel, signature

    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "settings.json"
        settings.write_text(json.dumps({"window": window, "precision": precision}))
        experiment = c.get_run(parent_run_id).info.experiment_id if parent_run_id else None
        with mlflow.start_run(
            run_name="register",
            parent_run_id=parent_run_id or None,
            nested=bool(parent_run_id),
            experiment_id=experiment,
        ):
            for path in artifacts.values():
                mlflow.log_artifact(path, artifact_path="evaluation")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=ExtractiveQAModel(),
                signature=signature(),
                artifacts={"model": model_dir, "settings": str(settings)},
                registered_model_name=name,
            )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, str(value))
    c.set_registered_model_alias(name, CHALLENGER, version)
    return version


def model_dir_of(c: Any, name: str, version: str, dest: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face model directory inside a registered version (downloaded from its artifact store)."""
    import mlflow

    _existing_version(c, name, version)
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
    root = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(dest) if dest else None
        )
    )
    from distilqa.model_io import registered_model_dir

    local = registered_model_dir(root)
    if not (local / "config.json").is_file():
        raise ModelError(f"models:/{name}/{version}: no model directory in its artifacts")
    return local


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """models:/name@alias or models:/name/version -> (name, alias, version)."""
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        return name, None, version
    raise ConfigError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")


def resolve_models_uri(uri: str, tracking_uri: str = "") -> Path:
    """A local model directory for `distilqa serve models:/name@alias`."""
    name, alias, version = parse_models_uri(uri)
    c = client(tracking_uri)
    if alias:
        mv = version_by_alias(c, name, alias)
        if mv is None:
            raise ModelError(f"{uri}: no version of {name!r} has alias {alias!r}")
        version = mv.version
    from distilqa.storage import cache_dir

    return model_dir_of(c, name, str(version), cache_dir() / "registry" / name / str(version))


def _existing_version(c: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version(name, version)
    except MlflowException:
        raise ModelError(f"models:/{name}/{version}: no such registered model version") from None


def promote(c: Any, name: str, version: str) -> str | None:
    """Make `version` the champion; the old champion becomes `previous-champion`. Returns the old version."""
    _existing_version(c, name, version)
    old = version_by_alias(c, name, CHAMPION)
    if old is not None and str(old.version) != str(version):
        c.set_registered_model_alias(name, PREVIOUS, old.version)
    c.set_registered_model_alias(name, CHAMPION, version)
    c.set_model_version_tag(name, version, "deployed", "true")
    return str(old.version) if old is not None else None


def rollback(c: Any, name: str) -> str:
    """Champion back to `previous-champion`; returns the version now serving."""
    previous = version_by_alias(c, name, PREVIOUS)
    if previous is None:
        raise ModelError(f"{name}: no previous champion to roll back to")
    current = version_by_alias(c, name, CHAMPION)
    c.set_registered_model_alias(name, CHAMPION, previous.version)
    if current is not None:
        c.set_model_version_tag(name, current.version, "rolled_back", "true")
        c.delete_registered_model_alias(name, PREVIOUS)
    return str(previous.version)
