"""The InferenceService's predictor container as the deploy step creates it, run as the kubelet would
(tests/rendered.py): the serving image's ENTRYPOINT with the object's args and env, a model at
/mnt/models (what KServe's storage initializer provides), and its own readiness and liveness probes
must answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.rendered import Kubelet, entrypoint

pytestmark = pytest.mark.slow


def probe(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return 0


def test_the_rendered_predictor_starts_and_passes_its_probes(tiny_roberta_dir, tmp_path):
    from distilqa.serving.rollout import Release, first_state

    release = Release("ghcr.io/distilqa/distilqa-serve:0.1.0", "s3://b/1", "tinyroberta-squad2", "1", "fp32")
    isvc = first_state(release, "distilqa", "tinyroberta-squad2", "distilqa-serving")
    (container,) = isvc["spec"]["predictor"]["containers"]
    kubelet = Kubelet([], secrets={}, services={}, mounts={"/mnt/models": tiny_roberta_dir})
    env = kubelet.env(container)
    argv = kubelet.argv(container, env, entrypoint("serving/Dockerfile"))
    port = container["ports"][0]["containerPort"]
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            pytest.fail(f"port {port} (the manifest's containerPort) is in use on this machine")
    log = (tmp_path / "serve.log").open("w")
    # the image's PATH puts its venv first; here, this environment's distilqa
    path = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    proc = subprocess.Popen(argv, env={**os.environ, "PATH": path, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert ready["port"] == live["port"] == port
        deadline = time.monotonic() + 120
        while probe(port, ready["path"]) != 200:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.5)
        assert probe(port, live["path"]) == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
