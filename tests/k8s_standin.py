"""A local stand-in for the Kubernetes API server's namespaced custom-object endpoints: no API server
can run here. It serves InferenceServices (serving.kserve.io/v1beta1) over HTTP as the API server does
for the calls the kubernetes client makes: GET an object (404 with a Status body when absent) and PATCH
with JSON merge-patch semantics (RFC 7386: null deletes a key, objects merge, anything else replaces),
bumping metadata.generation when the spec changes. A kubeconfig pointing at it is written, so the
real kubernetes/kserve clients are used unchanged. Every request is kept in `requests`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from tests.standin_http import JsonHandler, LoopbackServer

PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)/(?P<name>[^/?]+)$"
)


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


class Handler(JsonHandler):
    objects: dict[tuple[str, str, str], dict]
    requests: list[dict]

    def _status(self, code: int, reason: str, message: str) -> None:
        self.reply(
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": reason,
                "code": code,
                "message": message,
            },
        )

    def _key(self) -> tuple[str, str, str] | None:
        m = PATH.match(self.path.split("?")[0])
        return (m["plural"], m["ns"], m["name"]) if m else None

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append({"method": "GET", "path": self.path})
        key = self._key()
        if key is None or key not in self.objects:
            self._status(404, "NotFound", f"{key} not found")
            return
        self.reply(200, self.objects[key])

    def do_PATCH(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        content_type = self.headers.get("Content-Type", "")
        self.requests.append({"method": "PATCH", "path": self.path, "content_type": content_type, "body": body})
        key = self._key()
        if key is None or key not in self.objects:
            self._status(404, "NotFound", f"{key} not found")
            return
        if content_type != "application/merge-patch+json":
            self._status(
                415, "UnsupportedMediaType", f"this stand-in implements merge patches only, got {content_type}"
            )
            return
        before = self.objects[key]
        after = merge_patch(before, body)
        if after.get("spec") != before.get("spec"):
            after["metadata"]["generation"] = before["metadata"].get("generation", 1) + 1
        self.objects[key] = after
        self.reply(200, after)


class K8sStandin(LoopbackServer):
    """`with K8sStandin(tmp_path) as api:` serves on loopback; api.kubeconfig is a kubeconfig file for it."""

    def __init__(self, directory: Path) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[dict] = []
        super().__init__(type("BoundHandler", (Handler,), {"objects": self.objects, "requests": self.requests}))
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

    def put(self, obj: dict) -> None:
        plural = obj["kind"].lower() + "s"
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("generation", 1)
        self.objects[(plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj

    def get(self, plural: str, namespace: str, name: str) -> dict:
        return self.objects[(plural, namespace, name)]
