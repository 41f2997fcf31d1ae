"""A local stand-in for the Kubeflow Pipelines API server (REST v2beta1): no KFP backend can run here.

It implements the calls `distilqa submit` makes through the real `kfp.Client`, with the backend's
semantics where they matter, and checks what it receives:
- auth: every call but healthz needs `Authorization: Bearer <token>` or the `authservice_session`
  cookie it was started with (401 otherwise), as Kubeflow's auth proxy does;
- multi-user mode: pipelines, experiments and runs live in a namespace, which list and create calls
  must name (400 otherwise); a run's experiment must be in the namespace;
- uploads are multipart `uploadfile`s that must parse as a compiled KFP pipeline (400 otherwise);
  pipeline names are unique per namespace and version names per pipeline (409);
- runs and recurring runs must reference an existing pipeline version and experiment (404); a
  recurring run's cron must have 6 fields (400).
Everything received is kept in `requests` for the tests to inspect.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.standin_http import JsonHandler, LoopbackServer

PREFIX = "/apis/v2beta1"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class State:
    token: str = ""
    cookie: str = ""
    multi_user: bool = True
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring: dict[str, dict] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids):04d}"


def _filter_name(query: dict[str, list[str]]) -> str | None:
    raw = query.get("filter", [""])[0]
    if not raw:
        return None
    predicates = json.loads(raw).get("predicates", [])
    names = [p.get("stringValue") or p.get("string_value") for p in predicates if p.get("key") == "display_name"]
    return names[0] if names else None


def _compiled_pipeline(data: bytes) -> dict:
    try:
        spec = next(iter(yaml.safe_load_all(data.decode())))
    except (UnicodeDecodeError, yaml.YAMLError, StopIteration) as exc:
        raise ApiError(400, f"uploadfile is not a pipeline package: {exc}") from None
    if not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec:
        raise ApiError(400, "uploadfile is not a compiled KFP pipeline (no pipelineInfo/root)")
    return spec


class Handler(JsonHandler):
    state: State  # set on the subclass made per server

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        record = {
            "method": method,
            "path": url.path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        self.state.requests.append(record)
        try:
            if not url.path.startswith(PREFIX):
                raise ApiError(404, f"no route {url.path}")
            route = url.path[len(PREFIX) :]
            if route != "/healthz":
                self._authorize()
            body = self._route(method, route, query, raw, record)
            self.reply(200, body)
        except ApiError as exc:
            self.reply(exc.status, {"error": str(exc), "message": str(exc), "code": exc.status})

    def _authorize(self) -> None:
        s = self.state
        header = self.headers.get("Authorization", "")
        cookies = self.headers.get("Cookie", "")
        if s.token and header == f"Bearer {s.token}":
            return
        if s.cookie and f"authservice_session={s.cookie}" in [c.strip() for c in cookies.split(";")]:
            return
        raise ApiError(401, "Unauthenticated: no valid bearer token or authservice_session cookie")

    def _namespace(self, given: str | None) -> str:
        if self.state.multi_user and not given:
            raise ApiError(400, "multi-user mode: a namespace is required")
        return given or ""

    def _upload(self, raw: bytes) -> bytes:
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise ApiError(400, f"an upload is multipart/form-data, got {content_type!r}")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + raw
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                return part.get_payload(decode=True)
        raise ApiError(400, "multipart field uploadfile is missing")

    def _route(self, method: str, route: str, query: dict, raw: bytes, record: dict) -> dict:
        s = self.state
        q1 = {k: v[0] for k, v in query.items()}
        if method == "GET" and route == "/healthz":
            return {"commit_sha": "standin", "tag_name": "2.14.3", "multi_user": s.multi_user}
        if method == "GET" and route == "/pipelines":
            ns = self._namespace(q1.get("namespace"))
            name = _filter_name(query)
            found = [p for p in s.pipelines.values() if p["namespace"] == ns and name in (None, p["display_name"])]
            return {"pipelines": found, "total_size": len(found)}
        if method == "POST" and route == "/pipelines/upload":
            ns = self._namespace(q1.get("namespace"))
            spec = _compiled_pipeline(self._upload(raw))
            name = q1.get("name") or q1.get("display_name") or spec["pipelineInfo"]["name"]
            if any(p["display_name"] == name and p["namespace"] == ns for p in s.pipelines.values()):
                raise ApiError(409, f"pipeline {name!r} already exists in namespace {ns!r}")
            pipeline = {"pipeline_id": s.new_id("pipeline"), "display_name": name, "namespace": ns}
            s.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], name, spec)
            record["created"] = pipeline
            return pipeline
        if method == "POST" and route == "/pipelines/upload_version":
            pid = q1.get("pipelineid", "")
            if pid not in s.pipelines:
                raise ApiError(404, f"pipeline {pid!r} not found")
            name = q1.get("name") or q1.get("display_name") or ""
            if not name:
                raise ApiError(400, "a pipeline version needs a name")
            version = self._add_version(pid, name, _compiled_pipeline(self._upload(raw)))
            record["created"] = version
            return {k: v for k, v in version.items() if k != "pipeline_spec"}
        if method == "GET" and route == "/experiments":
            ns = self._namespace(q1.get("namespace"))
            name = _filter_name(query)
            found = [e for e in s.experiments.values() if e["namespace"] == ns and name in (None, e["display_name"])]
            return {"experiments": found, "total_size": len(found)}
        if method == "POST" and route == "/experiments":
            body = json.loads(raw or b"{}")
            ns = self._namespace(body.get("namespace"))
            experiment = {
                "experiment_id": s.new_id("experiment"),
                "display_name": body["display_name"],
                "namespace": ns,
            }
            s.experiments[experiment["experiment_id"]] = experiment
            return experiment
        if method == "POST" and route in ("/runs", "/recurringruns"):
            body = json.loads(raw or b"{}")
            record["body"] = body
            experiment = s.experiments.get(body.get("experiment_id", ""))
            if experiment is None:
                raise ApiError(404, f"experiment {body.get('experiment_id')!r} not found")
            ref = body.get("pipeline_version_reference") or {}
            version = s.versions.get(ref.get("pipeline_version_id", ""))
            if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
                raise ApiError(404, f"pipeline version {ref} not found")
            if route == "/runs":
                run = {**body, "run_id": s.new_id("run"), "state": "PENDING"}
                s.runs[run["run_id"]] = run
                return run
            cron = (body.get("trigger") or {}).get("cron_schedule", {}).get("cron", "")
            if len(cron.split()) != 6:
                raise ApiError(400, f"cron {cron!r} must have 6 fields")
            if not 1 <= int(body.get("max_concurrency") or 0) <= 10:
                raise ApiError(400, "max_concurrency must be within [1, 10]")
            recurring = {**body, "recurring_run_id": s.new_id("recurring"), "status": "ENABLED"}
            s.recurring[recurring["recurring_run_id"]] = recurring
            return recurring
        if method == "GET" and route.startswith("/runs/"):
            run = s.runs.get(route.removeprefix("/runs/"))
            if run is None:
                raise ApiError(404, "run not found")
            return run
        raise ApiError(404, f"no route {method} {route}")

    def _add_version(self, pipeline_id: str, name: str, spec: dict) -> dict:
        s = self.state
        if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in s.versions.values()):
            raise ApiError(409, f"version {name!r} already exists")
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": s.new_id("version"),
            "display_name": name,
            "pipeline_spec": spec,
        }
        s.versions[version["pipeline_version_id"]] = version
        return version

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


class KfpStandin(LoopbackServer):
    """`with KfpStandin(token=...) as kfp:` serves on loopback at kfp.url."""

    def __init__(self, token: str = "", cookie: str = "", multi_user: bool = True) -> None:
        self.state = State(token=token, cookie=cookie, multi_user=multi_user)
        super().__init__(type("BoundHandler", (Handler,), {"state": self.state}))
