"""A scripted KServe controller for the Kubernetes API stand-in (tests/k8s_standin.py): what reconciles
an InferenceService in Standard mode, played on this machine with real predictor processes.

For each generation of the spec it:
1. after a short lag (a real controller is not instant; a waiter that trusts an old Ready is caught),
   writes status.observedGeneration = generation with Ready False;
2. runs each predictor (stable, and each canary of spec.canary) as a "pod": KServe's storage
   initializer is played by downloading the container's STORAGE_URI from S3 into the pod's
   /mnt/models, then the container runs as the manifest says (serving/Dockerfile's ENTRYPOINT, its
   args and env, tests/rendered.py), with its own loopback port standing for its pod IP; it is ready
   when its own readinessProbe path answers 200. A pod whose container is unchanged keeps running;
3. writes status as KServe does: components.<predictor|canary name>.url, canaryStatuses, the Ready
   condition, and status.url (the traffic-split address; here the stable pod).

Scripts (sets of STORAGE_URIs): `never_ready` pods never pass readiness (no failure reported), `failing`
pods fail to load (transitionStatus BlockedByFailedLoad), `slow` pods sit behind a proxy that holds
each predict request for `slow_s` seconds.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.rendered import Kubelet, entrypoint

PLURAL = "inferenceservices"


class Pod:
    def __init__(self, container: dict[str, Any], workdir: Path) -> None:
        from distilqa.storage import download_prefix

        workdir.mkdir(parents=True, exist_ok=True)
        env_items = {e["name"]: e.get("value", "") for e in container.get("env", [])}
        self.models = download_prefix(env_items["STORAGE_URI"], workdir / "mnt-models")
        kubelet = Kubelet([], secrets={}, services={}, mounts={"/mnt/models": self.models})
        env = kubelet.env(container)
        argv = kubelet.argv(container, env, entrypoint("serving/Dockerfile"))
        self.port = free_port()  # the pod's own address: each pod gets a loopback port for its IP
        argv = _set(_set(argv, "--port", str(self.port)), "--host", "127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = container["readinessProbe"]["httpGet"]["path"]
        path = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
        self.log = (workdir / "pod.log").open("w")
        self.proc = subprocess.Popen(
            argv, env={**os.environ, "PATH": path, **env}, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 180) -> bool:
        """Ready when the container's own readinessProbe path answers, as the kubelet decides."""
        from distilqa.serving.process import wait_ready

        return wait_ready(self.proc, self.url, timeout, self.ready_path)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    out[out.index(flag) + 1] = value
    return out


class SlowProxy:
    """Forwards to `target`, holding each POST (a predict) for `delay` seconds: an overloaded pod."""

    def __init__(self, target: str, delay: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self, data: bytes | None) -> None:
                request = urllib.request.Request(target + self.path, data=data, method=self.command)
                request.add_header("Content-Type", self.headers.get("Content-Type", "application/json"))
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, body = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up waiting
                    pass

            def do_GET(self) -> None:  # noqa: N802
                self._forward(None)

            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                self._forward(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ScriptedController:
    def __init__(self, api: Any, workdir: Path, lag_s: float = 0.4) -> None:
        self.api, self.workdir, self.lag_s = api, workdir, lag_s
        self.never_ready: set[str] = set()
        self.failing: set[str] = set()
        self.slow: set[str] = set()
        self.slow_s = 5.0
        self.pods: dict[str, Pod] = {}
        self.proxies: dict[str, SlowProxy] = {}
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._seen: dict[tuple[str, str, str], int] = {}
        self._thread = threading.Thread(target=self._loop, daemon=True)
        api.store.on_write.append(self._on_write)
        self._thread.start()

    def _on_write(self, obj: dict) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"], obj["metadata"].get("uid", ""))
        if self._seen.get(key) == obj["metadata"]["generation"]:
            return  # a status write, or nothing the controller has not seen
        self._seen[key] = obj["metadata"]["generation"]
        self._queue.put(obj)

    def _loop(self) -> None:
        while (obj := self._queue.get()) is not None:
            try:
                self._reconcile(obj)
            except Exception as exc:  # a broken controller must show in the test, not hang it
                print(f"scripted controller: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _current(self, obj: dict) -> bool:
        try:
            live = self.api.get(PLURAL, obj["metadata"]["namespace"], obj["metadata"]["name"])
        except KeyError:
            return False
        return live["metadata"]["generation"] == obj["metadata"]["generation"]

    def _write(self, obj: dict, status: dict) -> None:
        meta = obj["metadata"]
        self.api.set_status(PLURAL, meta["namespace"], meta["name"], status, meta["generation"])

    def _reconcile(self, obj: dict) -> None:
        time.sleep(self.lag_s)
        if not self._current(obj):
            return
        generation = obj["metadata"]["generation"]
        old = obj.get("status") or {}
        reconciling = {"type": "Ready", "status": "False", "reason": "Reconciling"}
        self._write(obj, {**old, "observedGeneration": generation, "conditions": [reconciling]})
        spec = obj["spec"]
        named = [("predictor", spec["predictor"], None)]
        named += [
            (c["predictor"].get("name", "canary"), c["predictor"], c["trafficPercent"]) for c in spec.get("canary", [])
        ]
        urls: dict[str, str | None] = {}
        failures: dict[str, str] = {}
        for name, predictor, _ in named:
            if not self._current(obj):
                return
            urls[name], failure = self._run(predictor["containers"][0])
            if failure:
                failures[name] = failure
        if not self._current(obj):
            return
        status: dict[str, Any] = {"observedGeneration": generation, "deploymentMode": "Standard"}
        status["components"] = {name: {"url": url} for name, url in urls.items() if url}
        canaries = []
        for name, _, percent in named[1:]:
            entry: dict[str, Any] = {"name": name, "ready": urls[name] is not None, "trafficPercent": percent}
            if name in failures:
                entry["modelStatus"] = _failed(failures[name])
            canaries.append(entry)
        if canaries:
            status["canaryStatuses"] = canaries
        if "predictor" in failures:
            status["modelStatus"] = _failed(failures["predictor"])
        ready = all(urls.values())
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
        if urls["predictor"]:
            status["url"] = urls["predictor"]
        self._write(obj, status)

    def _run(self, container: dict) -> tuple[str | None, str]:
        """(the pod's URL when ready, a load failure message)."""
        uri = next(e["value"] for e in container["env"] if e["name"] == "STORAGE_URI")
        if uri in self.never_ready:
            return None, ""
        if uri in self.failing:
            return None, f"cannot load the model at {uri}"
        key = json.dumps(container, sort_keys=True)
        if key not in self.pods:
            pod = Pod(container, self.workdir / f"pod-{len(self.pods)}")
            if not pod.wait_ready():
                pod.stop()
                return None, f"pod exited or never ready; {pod.log.name}"
            self.pods[key] = pod
        url = self.pods[key].url
        if uri in self.slow:
            self.proxies.setdefault(url, SlowProxy(url, self.slow_s))
            return self.proxies[url].url, ""
        return url, ""

    def pod_for(self, uri: str) -> Pod:
        (pod,) = [p for k, p in self.pods.items() if uri in k]
        return pod

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        for pod in self.pods.values():
            pod.stop()
        for proxy in self.proxies.values():
            proxy.stop()


def _failed(message: str) -> dict:
    return {
        "transitionStatus": "BlockedByFailedLoad",
        "states": {"activeModelState": "FailedToLoad"},
        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message},
    }
