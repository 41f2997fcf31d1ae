"""The ExitHandler's finalize step against a Kubernetes API stand-in (tests/k8s_standin.py): a failed
run removes the canary a cluster deploy left in the InferenceService, through the real kubernetes client."""

from __future__ import annotations

import pytest

from tests.k8s_standin import K8sStandin


def with_canary() -> dict:
    """The InferenceService as a deploy step killed mid-rollout leaves it: version 1 stable, 2 canary."""
    from distilqa.serving.rollout import Release, canary_state, first_state

    one = Release("ghcr.io/distilqa/distilqa-serve:0.1.0", "s3://b/1", "tinyroberta-squad2", "1", "fp32")
    obj = first_state(one, "distilqa", "tinyroberta-squad2", "distilqa-serving")
    obj["spec"] = canary_state(obj["spec"], Release(one.image, "s3://b/2", one.served_name, "2", "fp32"), 10)
    return obj


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

    isvc = with_canary()
    assert isvc["spec"]["canary"]
    api.put(isvc)
    out = run_finalize("FAILED", "Task deploy failed", NO_TRACKING, DEPLOY, "run-1")
    assert out["canary_removed"] == "True"
    after = api.get("inferenceservices", "distilqa", "tinyroberta-squad2")
    assert "canary" not in after["spec"] and after["spec"]["predictor"] == isvc["spec"]["predictor"]
    (patch,) = [r for r in api.requests if r["method"] == "PATCH"]
    assert patch["content_type"] == "application/merge-patch+json" and patch["body"]["spec"] == {"canary": None}
    assert patch["body"]["metadata"]["resourceVersion"]  # only if nobody changed it meanwhile
    # nothing left to remove: no second patch
    assert run_finalize("FAILED", "again", NO_TRACKING, DEPLOY, "run-1")["canary_removed"] == "False"
    assert len([r for r in api.requests if r["method"] == "PATCH"]) == 1


def test_a_successful_run_leaves_the_inference_service_alone(api):
    from distilqa.components.finalize import run_finalize

    api.put(with_canary())
    assert run_finalize("SUCCEEDED", "", NO_TRACKING, DEPLOY, "run-1") == {}
    assert api.requests == []


def test_a_run_that_failed_before_tracking_still_leaves_a_failed_mlflow_run(tmp_path, monkeypatch):
    """open-tracking is the one step nothing waits for; if it failed, finalize makes the FAILED run itself."""
    from distilqa.components.finalize import run_finalize
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_finalize("FAILED", "Task open-tracking failed", {"tracking_uri": uri}, {"mode": "local"}, "run-7")
    assert out["status"] == "FAILED" and out["failed_step"] == "open_tracking"
    c = MlflowClient(uri)
    (run,) = c.search_runs([c.get_experiment_by_name("distilqa").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["kfp.run_id"] == "run-7"
    assert run.data.tags["distilqa.error"] == "Task open-tracking failed"
    # a successful run without a parent (tracking off at open time) creates nothing
    assert run_finalize("SUCCEEDED", "", {"tracking_uri": uri}, {"mode": "local"}, "run-8") == {}
