"""`distilqa submit`: the compiled pipeline to a Kubeflow Pipelines API (v2beta1), as a team uses it.

The package is uploaded as a named pipeline plus a version (so the KFP UI lists what ran, and a
recurring run points at a version, not at a file), then run once in an experiment of the user's
namespace, or scheduled with a cron expression. Authentication is what a Kubeflow install asks for:
a bearer token (a ServiceAccount token, an OIDC id token), or the `authservice_session` cookie of a
logged-in Kubeflow profile. Everything is checked before anything is sent.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilqa.errors import ConfigError, DistilqaError

TOKEN_ENV = "KF_PIPELINES_TOKEN"  # read when neither --token-file nor --session-cookie-file is given
ROOT_SCHEMES = ("minio://", "s3://", "gs://")


@dataclass(frozen=True)
class Submission:
    host: str
    namespace: str = ""  # "" = single-user KFP (no profile namespace)
    experiment: str = "distilqa"
    pipeline_name: str = ""  # "" = distilqa-<profile>
    version_name: str = ""  # "" = <profile>-<code version>-<UTC time>
    run_name: str = ""
    cron: str = ""  # "" = one run now
    pipeline_root: str = ""
    token: str = ""
    session_cookie: str = ""


def check_pipeline_root(root: str) -> str:
    if root and not root.startswith(ROOT_SCHEMES):
        raise ConfigError(f"--pipeline-root must start with {', '.join(ROOT_SCHEMES)}, got {root!r}")
    return root


def kfp_cron(expression: str) -> str:
    """KFP schedules take 6 fields (seconds first); a classic 5-field crontab line gets second 0."""
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(re.fullmatch(r"[0-9A-Za-z*?/,\-LW#]+", f) for f in fields):
        raise ConfigError(f"--cron must be a cron expression of 5 or 6 fields, got {expression!r}")
    return " ".join(fields)


def read_secret(path: str, what: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{what} {path} is empty")
    return value


def credentials(token_file: str, cookie_file: str) -> tuple[str, str]:
    """(bearer token, authservice_session cookie): from the files given, else the token in $KF_PIPELINES_TOKEN."""
    if token_file and cookie_file:
        raise ConfigError("give --token-file or --session-cookie-file, not both")
    if token_file:
        return read_secret(token_file, "--token-file"), ""
    if cookie_file:
        cookie = read_secret(cookie_file, "--session-cookie-file").removeprefix("authservice_session=")
        return "", cookie
    return os.environ.get(TOKEN_ENV, "").strip(), ""


def submit(package: str, profile_name: str, s: Submission) -> dict[str, Any]:
    """Upload the package as pipeline + version, then run it or schedule it; returns what was created."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # kfp.Client's notice about KFP backends < 2.0
        import kfp

        client = kfp.Client(
            host=s.host,
            namespace=s.namespace or "kubeflow",
            existing_token=s.token or None,
            cookies=f"authservice_session={s.session_cookie}" if s.session_cookie else None,
        )
    namespace = s.namespace or None
    name = s.pipeline_name or f"distilqa-{profile_name}"
    version = s.version_name or _default_version(profile_name)
    # kfp.Client prints UI links (pipeline, experiment, run details) to stdout: keep stdout for the result
    with contextlib.redirect_stdout(sys.stderr):
        return _upload_and_run(client, package, name, version, namespace, s)


def _upload_and_run(
    client: Any, package: str, name: str, version: str, namespace: str | None, s: Submission
) -> dict[str, Any]:
    try:
        pipeline_id = _pipeline_id(client, name, namespace)
        created_pipeline = pipeline_id is None
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(package, pipeline_name=name, namespace=namespace).pipeline_id
        version_id = client.upload_pipeline_version(
            package, pipeline_version_name=version, pipeline_id=pipeline_id
        ).pipeline_version_id
        experiment_id = client.create_experiment(s.experiment, namespace=namespace).experiment_id
        common = {
            "experiment_id": experiment_id,
            "job_name": s.run_name or f"{name} {version}",
            "pipeline_id": pipeline_id,
            "version_id": version_id,
            "pipeline_root": s.pipeline_root or None,
        }
        out = {
            "pipeline_id": pipeline_id,
            "pipeline_created": created_pipeline,
            "version": version,
            "version_id": version_id,
            "experiment_id": experiment_id,
        }
        if s.cron:
            recurring = client.create_recurring_run(
                cron_expression=s.cron, max_concurrency=1, no_catchup=True, enabled=True, **common
            )
            return {**out, "recurring_run_id": recurring.recurring_run_id, "cron": s.cron}
        return {**out, "run_id": client.run_pipeline(**common).run_id}
    except Exception as exc:  # kfp_server_api raises ApiException, urllib3 errors, ...: one line for the user
        raise DistilqaError(f"{s.host}: cannot submit: {_one_line(exc)}") from None


def _pipeline_id(client: Any, name: str, namespace: str | None) -> str | None:
    import json

    query = {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    found = client.list_pipelines(filter=json.dumps(query), namespace=namespace).pipelines or []
    return found[0].pipeline_id if found else None


def _default_version(profile_name: str) -> str:
    import datetime

    from distilqa import __version__
    from distilqa.distill.provenance import git_sha

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{profile_name}-{git_sha()[:12] or __version__}-{stamp}"


def _one_line(exc: Exception) -> str:
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status:
        body = str(getattr(exc, "body", "") or "").strip().replace("\n", " ")[:300]
        return f"HTTP {status} {reason or ''}".strip() + (f": {body}" if body else "")
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
