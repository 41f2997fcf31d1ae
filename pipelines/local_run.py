"""`distilqa run`: the pipeline on this machine with kfp.local (SubprocessRunner, this Python).

Before the run: `smoke:` model references are built locally (tokenizer trained on the shipped dev
set, random init) and the tracking URI defaults to a SQLite file in the output directory. After:
D/summary.json with the registered version, its aliases, the official metrics, the gate decision
and every step's wall time (from kfp.local's own task log).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from distilqa.components import RUN_ID_ENV
from distilqa.pipelines.profile import Profile, replace_section

SMOKE_SHAPES = {
    "teacher-mlm": dict(num_layers=4, hidden_size=64, num_heads=4, seed=1),
    "teacher-large-mlm": dict(num_layers=4, hidden_size=64, num_heads=4, seed=2),
}


def build_smoke_models(root: Path) -> dict[str, str]:
    from distilqa.local_models import random_mlm_model, train_tokenizer
    from distilqa.squad import load_squad

    root.mkdir(parents=True, exist_ok=True)
    tok = root / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        contexts = list(dict.fromkeys(p.context for _, p, _ in load_squad().iter_questions()))
        train_tokenizer(contexts, tok, "bpe", vocab_size=2000)
    out = {}
    for name, shape in SMOKE_SHAPES.items():
        if not (root / name / "config.json").exists():
            random_mlm_model(tok, root / name, **shape)
        out[f"smoke:{name}"] = str(root / name)
    return out


def resolve_smoke_refs(profile: Profile, root: Path) -> Profile:
    models = dataclasses.asdict(profile.models)
    if not any(isinstance(v, str) and v.startswith("smoke:") for v in models.values()):
        return profile
    refs = build_smoke_models(root)
    unknown = [v for v in models.values() if isinstance(v, str) and v.startswith("smoke:") and v not in refs]
    if unknown:
        from distilqa.errors import ConfigError

        raise ConfigError(f"unknown smoke model {unknown[0]!r} (known: {', '.join(refs)})")
    changed = {k: refs.get(v, v) if isinstance(v, str) else v for k, v in models.items()}
    return replace_section(profile, "models", **changed)


class _TaskClock(logging.Filter):
    """Wall time per task, from kfp.local's 'Executing task' / 'finished with status' lines.

    A filter on the root logger, not a handler: kfp.local replaces the root handlers while it runs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.status: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        self._see(record)
        return True

    def _see(self, record: logging.LogRecord) -> None:
        import re

        msg = re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage())
        if m := re.search(r"Executing task '([^']+)'", msg):
            self.started[m.group(1)] = time.perf_counter()
        elif m := re.search(r"Task '([^']+)' finished with status (\w+)", msg):
            name = m.group(1)
            key = name if name not in self.seconds else f"{name}#{sum(k.startswith(name) for k in self.seconds) + 1}"
            self.seconds[key] = round(time.perf_counter() - self.started.get(name, time.perf_counter()), 1)
            self.status[key] = m.group(2)


def allow_oneof_artifacts() -> None:
    """Let kfp.local resolve a dsl.OneOf of artifacts, as a KFP backend does.

    kfp.local 2.17 resolves dsl.OneOf for parameters only and rejects a DAG output with one artifact
    selector per branch ("Expected 1 artifact in ArtifactSelectorSpec"). The pipeline passes teachers
    and the student as artifacts out of If/Else branches, so the local runner picks, like the
    backend, the one branch that produced the artifact.
    """
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

    if getattr(OrchestratorUtils, "_distilqa_oneof_artifacts", False):
        return

    def get_dag_output_artifacts(cls: Any, dag_outputs_spec: Any, io_store: Any) -> dict[str, Any]:
        outputs = {}
        for key, spec in dag_outputs_spec.artifacts.items():
            found = []
            for selector in spec.artifact_selectors:
                try:
                    found.append(io_store.get_task_output(selector.producer_subtask, selector.output_artifact_key))
                except (KeyError, ValueError):  # a branch that did not run
                    continue
            if len(found) != 1:
                raise ValueError(f"dsl.OneOf output {key!r}: {len(found)} branches produced it, expected exactly 1")
            outputs[key] = found[0]
        return outputs

    OrchestratorUtils.get_dag_output_artifacts = classmethod(get_dag_output_artifacts)  # type: ignore[assignment]
    OrchestratorUtils._distilqa_oneof_artifacts = True  # type: ignore[attr-defined]


def run_local(profile: Profile, output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    from distilqa.pipelines.pipeline import build_pipeline
    from kfp import local

    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    profile = resolve_smoke_refs(profile, out / "smoke-models")
    uri = profile.registry.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{out / 'mlflow.db'}"
    profile = replace_section(profile, "registry", tracking_uri=uri)
    os.environ.setdefault("DISTILQA_CACHE", str(out / "cache"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out / "kfp-root"), raise_on_error=True)
    allow_oneof_artifacts()
    clock = _TaskClock()
    pipeline = build_pipeline(profile, condition_on_gate=False)
    logging.getLogger().addFilter(clock)
    # what a cluster gives every step's pod: the run id (label pipeline/runid) and the tracking URI (Secret)
    step_env = {RUN_ID_ENV: f"local-{uuid.uuid4()}", "MLFLOW_TRACKING_URI": uri}
    saved = {k: os.environ.get(k) for k in step_env}
    os.environ.update(step_env)
    t0 = time.perf_counter()
    try:
        pipeline()
    finally:
        logging.getLogger().removeFilter(clock)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    total = time.perf_counter() - t0
    summary = collect_summary(profile, uri, clock.seconds, total)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def collect_summary(profile: Profile, uri: str, stages: dict[str, float], total: float) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    c = MlflowClient(uri)
    name = profile.registry.model_name
    experiment = c.get_experiment_by_name(profile.registry.experiment)
    runs = c.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`distilqa.profile` = '{profile.name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    parent = runs[0]
    evaluation = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="gate/official_eval.json")
        ).read_text()
    )
    official = (
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
    )
    passed = parent.data.tags.get("gate.passed") == "true"
    version, aliases = None, []
    versions = c.search_model_versions(f"name = '{name}'") if passed else []
    mine = [
        v for v in versions if v.tags.get("kfp_run_id") and v.run_id and _parent_of(c, v.run_id) == parent.info.run_id
    ]
    if mine:
        latest = max(mine, key=lambda v: int(v.version))
        version, aliases = str(latest.version), list(c.get_model_version(name, latest.version).aliases)
    return {
        "profile": profile.name,
        "tracking_uri": uri,
        "mlflow_run_id": parent.info.run_id,
        "registered_model": name if version else None,
        "version": version,
        "aliases": aliases,
        "metrics": {k: evaluation[k] for k in official if k in evaluation},
        "latency_ms": {k: evaluation[k] for k in ("latency_p50_ms", "latency_p95_ms") if k in evaluation},
        "gate": {"passed": passed, "reason": parent.data.tags.get("gate.reason", "")},
        "stages": stages,
        "total_seconds": round(total, 1),
    }


def _parent_of(c: Any, run_id: str) -> str:
    return c.get_run(run_id).data.tags.get("mlflow.parentRunId", "")


def print_next_steps(summary: dict[str, Any], output_dir: str) -> None:
    uri = summary["tracking_uri"]
    lines = [
        f"summary: {Path(output_dir) / 'summary.json'}",
        f"gate: {'passed' if summary['gate']['passed'] else 'FAILED'}: {summary['gate']['reason']}",
    ]
    if summary["version"]:
        lines.append(
            f"registered: {summary['registered_model']} version {summary['version']} "
            f"(aliases: {', '.join(summary['aliases']) or 'none'})"
        )
    lines.append(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000")
    print("\n".join(lines), file=sys.stderr)
