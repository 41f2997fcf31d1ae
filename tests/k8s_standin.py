"""A local stand-in for the Kubernetes API server's namespaced custom-object endpoints: no API server
can run here. It serves InferenceServices (serving.kserve.io/v1beta1) over HTTP with the semantics the
kubernetes client relies on, for the calls the deploy step makes:

- GET an object (404 with a Status body when absent);
- POST to the collection: create (409 AlreadyExists), with uid, generation 1, resourceVersion;
- PATCH with JSON merge-patch semantics (RFC 7386: null deletes a key, objects merge, anything else
  replaces); a `metadata.resourceVersion` in the patch is a precondition (409 Conflict when stale);
  metadata.generation is bumped when the spec changes, resourceVersion on every write;
- DELETE (404 when absent).

Every object written is validated against the vendored InferenceService CRD schema
(tests/data/schemas, JSON Schema Draft 7) and refused with 422 Invalid, as the API server does with a
CRD's structural schema. `on_write` callbacks see each stored object (the scripted controller in
tests/kserve_controller.py). A kubeconfig pointing at the stand-in is written, so the real kubernetes
client is used unchanged. Every request is kept in `requests`.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

from tests.standin_http import JsonHandler, LoopbackServer

SCHEMA = json.loads((Path(__file__).parent / "data" / "schemas" / "inferenceservice_v1beta1.schema.json").read_text())
OBJECT = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)/(?P<name>[^/]+)$"
)
COLLECTION = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)$")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def schema_errors(obj: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


class Store:
    """The objects, their resourceVersions and the write hooks; one lock for the handler threads."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[dict] = []
        self.on_write: list[Callable[[dict], None]] = []
        self.lock = threading.RLock()
        self._versions = itertools.count(1)

    def write(self, key: tuple[str, str, str], obj: dict) -> dict:
        """Validate and store `obj` under `key`; returns the stored copy (or raises ValueError)."""
        errors = schema_errors(obj)
        if errors:
            raise ValueError("; ".join(errors[:5]))
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = obj
        stored = copy.deepcopy(obj)
        for hook in self.on_write:
            hook(copy.deepcopy(obj))
        return stored


class Handler(JsonHandler):
    store: Store

    def _status(self, code: int, reason: str, message: str) -> None:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}
        self.reply(code, {**body, "message": message})

    def _object_key(self) -> tuple[str, str, str] | None:
        m = OBJECT.match(self.path.split("?")[0])
        return (m["plural"], m["ns"], m["name"]) if m else None

    def _body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

    def do_GET(self) -> None:  # noqa: N802
        self.store.requests.append({"method": "GET", "path": self.path})
        key = self._object_key()
        with self.store.lock:
            if key is None or key not in self.store.objects:
                self._status(404, "NotFound", f"{key} not found")
                return
            self.reply(200, self.store.objects[key])

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        self.store.requests.append({"method": "POST", "path": self.path, "body": body})
        m = COLLECTION.match(self.path.split("?")[0])
        if m is None or not isinstance(body, dict) or "metadata" not in body:
            self._status(400, "BadRequest", "POST an object to a namespaced collection")
            return
        meta = body["metadata"]
        if meta.get("namespace", m["ns"]) != m["ns"]:
            self._status(400, "BadRequest", "the namespace of the object does not match the request's")
            return
        key = (m["plural"], m["ns"], meta.get("name", ""))
        with self.store.lock:
            if key in self.store.objects:
                self._status(409, "AlreadyExists", f"{m['plural']} {meta.get('name')!r} already exists")
                return
            obj = copy.deepcopy(body)
            obj.pop("status", None)
            obj["metadata"].update(namespace=m["ns"], uid=str(uuid.uuid4()), generation=1)
            try:
                stored = self.store.write(key, obj)
            except ValueError as exc:
                self._status(422, "Invalid", str(exc))
                return
        self.reply(201, stored)

    def do_PATCH(self) -> None:  # noqa: N802
        body = self._body()
        content_type = self.headers.get("Content-Type", "")
        self.store.requests.append({"method": "PATCH", "path": self.path, "content_type": content_type, "body": body})
        key = self._object_key()
        if content_type != "application/merge-patch+json":
            self._status(
                415, "UnsupportedMediaType", f"this stand-in implements merge patches only, got {content_type}"
            )
            return
        with self.store.lock:
            if key is None or key not in self.store.objects:
                self._status(404, "NotFound", f"{key} not found")
                return
            before = self.store.objects[key]
            wanted = ((body.get("metadata") or {}) if isinstance(body, dict) else {}).get("resourceVersion")
            if wanted is not None and wanted != before["metadata"]["resourceVersion"]:
                self._status(409, "Conflict", "the object has been modified; apply your changes to the latest version")
                return
            after = merge_patch(before, body)
            after["metadata"]["resourceVersion"] = before["metadata"]["resourceVersion"]
            if after.get("spec") != before.get("spec"):
                after["metadata"]["generation"] = before["metadata"].get("generation", 1) + 1
            try:
                stored = self.store.write(key, after)
            except ValueError as exc:
                self._status(422, "Invalid", str(exc))
                return
        self.reply(200, stored)

    def do_DELETE(self) -> None:  # noqa: N802
        self.store.requests.append({"method": "DELETE", "path": self.path})
        key = self._object_key()
        with self.store.lock:
            if key is None or key not in self.store.objects:
                self._status(404, "NotFound", f"{key} not found")
                return
            del self.store.objects[key]
        self.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


class K8sStandin(LoopbackServer):
    """`with K8sStandin(tmp_path) as api:` serves on loopback; api.kubeconfig is a kubeconfig file for it."""

    def __init__(self, directory: Path) -> None:
        self.store = Store()
        self.objects, self.requests = self.store.objects, self.store.requests
        super().__init__(type("BoundHandler", (Handler,), {"store": self.store}))
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                    "users": [{"name": "standin", "user": {"token": "standin-token"}}],
                    "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
                    "current-context": "standin",
                }
            )
        )

    def put(self, obj: dict) -> dict:
        """Store `obj` as if created (validated, generation 1); what a test starts from."""
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("generation", 1)
        with self.store.lock:
            return self.store.write(
                (obj["kind"].lower() + "s", obj["metadata"]["namespace"], obj["metadata"]["name"]), obj
            )

    def get(self, plural: str, namespace: str, name: str) -> dict:
        with self.store.lock:
            return copy.deepcopy(self.objects[(plural, namespace, name)])

    def set_status(self, plural: str, namespace: str, name: str, status: dict, generation: int) -> bool:
        """The controller's status write (the status subresource): only while the object is still at
        `generation`, as a controller's update with a stale resourceVersion would be refused."""
        with self.store.lock:
            obj = self.objects.get((plural, namespace, name))
            if obj is None or obj["metadata"].get("generation") != generation:
                return False
            updated = {**obj, "status": status}
            self.store.write((plural, namespace, name), updated)
            return True
