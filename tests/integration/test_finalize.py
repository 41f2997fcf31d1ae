"""The ExitHandler's finalize step against a Kubernetes API stand-in (tests/k8s_standin.py): a failed
run removes the canary a cluster deploy left in the InferenceService, through the real kserve client."""

from __future__ import annotations

import pytest

from tests.k8s_standin import K8sStandin
from tests.rendered import find, render

DEPLOY = {"mode": "cluster", "namespace": "distilqa", "service_name": "tinyroberta-squad2"}
NO_TRACKING = {"tracking_uri": ""}


@pytest.fixture()
def api(tmp_path, monkeypatch):
    with K8sStandin(tmp_path) as standin:
        monkeypatch.setenv("KUBECONFIG", str(standin.kubeconfig))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield standin


def test_a_failed_run_removes_the_canary_and_keeps_the_stable_predictor(api):
    from distilqa.components.finalize import run_finalize

    isvc = find(render("manifests/serving/overlays/canary"), "InferenceService", "tinyroberta-squad2")
    assert isvc["spec"]["canary"]
    api.put(isvc)
    out = run_finalize("FAILED", "Task deploy failed", NO_TRACKING, DEPLOY, "run-1")
    assert out["canary_removed"] == "True"
    after = api.get("inferenceservices", "distilqa", "tinyroberta-squad2")
    assert "canary" not in after["spec"] and after["spec"]["predictor"] == isvc["spec"]["predictor"]
    (patch,) = [r for r in api.requests if r["method"] == "PATCH"]
    assert patch["content_type"] == "application/merge-patch+json" and patch["body"] == {"spec": {"canary": None}}
    # nothing left to remove: no second patch
    assert run_finalize("FAILED", "again", NO_TRACKING, DEPLOY, "run-1")["canary_removed"] == "False"
    assert len([r for r in api.requests if r["method"] == "PATCH"]) == 1


def test_a_successful_run_leaves_the_inference_service_alone(api):
    from distilqa.components.finalize import run_finalize

    api.put(find(render("manifests/serving/overlays/canary"), "InferenceService", "tinyroberta-squad2"))
    api.requests.clear()  # kubectl kustomize above asked the stand-in for its /version
    assert run_finalize("SUCCEEDED", "", NO_TRACKING, DEPLOY, "run-1") == {}
    assert api.requests == []
