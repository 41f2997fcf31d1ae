"""The cluster deploy step (components/deploy.py, distilqa.serving.rollout) against an API, not helpers.

No Kubernetes API server can run here: tests/k8s_standin.py serves the custom-object endpoints with
their real semantics (create, merge patch with resourceVersion preconditions, delete, generations,
every object validated against the vendored CRD schema), reached by the real kubernetes client
through a kubeconfig. tests/kserve_controller.py plays KServe's controller: each predictor runs as a
real `distilqa serve` process, its model downloaded from the S3 API (moto) the MLflow registry wrote
to. Each scenario checks the object the step leaves, the registry's aliases and the version's tags.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.k8s_standin import K8sStandin, schema_errors
from tests.kserve_controller import ScriptedController

pytestmark = pytest.mark.slow

NAME, NS = "tinyroberta-squad2", "distilqa"
BUCKET = "distilqa-mlflow"
PROBE = 4
FAST = {"poll_s": 0.2, "probe_questions": PROBE, "ready_timeout_s": 120, "probe_timeout_s": 20}


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_server, tiny_roberta_dir, tiny_bert_dir, dev_slice_file):
    """S3 (moto), an MLflow registry with two versions in it, their evaluated predictions, the API
    stand-in with its controller, and the kubeconfig, as the deploy pod would have them."""
    import boto3
    from distilqa.components.evaluate import run_evaluate
    from mlflow import MlflowClient

    from distilqa.registry import register

    tmp = tmp_path_factory.mktemp("rollout")
    mp = pytest.MonkeyPatch()
    for key, value in s3_server.items():
        mp.setenv(key, value)
    mp.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server["AWS_ENDPOINT_URL"])
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    import mlflow

    # register() logs through mlflow's process-wide URIs, which an earlier test may have set (and a
    # client's registry defaults to them): this store for the tracking and the registry, both
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    c = MlflowClient(uri, registry_uri=uri)
    c.create_experiment("distilqa", artifact_location=f"s3://{BUCKET}/artifacts/1")
    mlflow.set_experiment("distilqa")
    versions, predictions = {}, {}
    for label, model in (("v1", tiny_roberta_dir), ("v2", tiny_bert_dir)):
        predictions[label] = tmp / f"predictions-{label}.json"
        run_evaluate(
            str(model), str(dev_slice_file), {}, {}, {}, str(tmp / f"eval-{label}.json"), str(predictions[label])
        )
        versions[label] = register(c, NAME, str(model), {}, "fp32", {}, {})
    with K8sStandin(tmp) as api:
        mp.setenv("KUBECONFIG", str(api.kubeconfig))
        controller = ScriptedController(api, tmp / "pods")
        try:
            yield {
                "api": api,
                "controller": controller,
                "client": c,
                "tracking": {"uri": uri},
                "versions": versions,
                "predictions": predictions,
                "dev": str(dev_slice_file),
                "tmp": tmp,
            }
        finally:
            controller.stop()
            mlflow.set_tracking_uri(before[0])
            mlflow.set_registry_uri(before[1])
            mp.undo()


def deploy(world, label: str, predictions: str | None = None, **settings):
    from distilqa.components.deploy import run_deploy_cluster

    return run_deploy_cluster(
        world["versions"][label],
        world["dev"],
        str(world["predictions"][predictions or label]),
        {"mode": "cluster", **FAST, **settings},
        {"model_name": NAME},
        {"serving_image": "ghcr.io/distilqa/distilqa-serve:test"},
        world["tracking"],
    )


def live(world) -> dict:
    return world["api"].get("inferenceservices", NS, NAME)


def aliases(world) -> dict[str, str]:
    return {alias: str(v) for alias, v in world["client"].get_registered_model(NAME).aliases.items()}


def tags(world, label: str) -> dict[str, str]:
    return world["client"].get_model_version(NAME, world["versions"][label]).tags


def storage(obj_predictor: dict) -> str:
    (container,) = obj_predictor["containers"]
    return next(e["value"] for e in container["env"] if e["name"] == "STORAGE_URI")


def canonical(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def reset(world, label: str | None) -> dict | None:
    """Back to `label` serving alone (None: no InferenceService) with `label` champion, scripts cleared."""
    from distilqa.registry import CHAMPION

    ctl = world["controller"]
    ctl.never_ready.clear(), ctl.failing.clear(), ctl.slow.clear()
    world["api"].objects.clear()
    for alias in list(aliases(world)):
        world["client"].delete_registered_model_alias(NAME, alias)
    for version in world["versions"].values():
        for tag in world["client"].get_model_version(NAME, version).tags:
            if tag.startswith(("rollout", "probe_")):
                world["client"].delete_model_version_tag(NAME, version, tag)
    if label is None:
        world["api"].requests.clear()
        return None
    deploy(world, label)
    world["client"].set_registered_model_alias(NAME, CHAMPION, world["versions"][label])
    world["api"].requests.clear()
    return live(world)


def test_first_deploy_creates_the_whole_object_and_makes_a_champion(world):
    from distilqa.serving.rollout import template

    reset(world, None)
    promoted, detail, url = deploy(world, "v1")
    assert promoted and "first deploy" in detail, detail
    obj = live(world)
    assert schema_errors(obj) == []
    methods = [r["method"] for r in world["api"].requests]
    assert methods[0] == "GET" and methods.count("POST") == 1 and "PATCH" not in methods
    # the base predictor, whole: only the model's fields differ from serving/inferenceservice.yaml
    base, got = template()["spec"]["predictor"], obj["spec"]["predictor"]
    (bc,), (gc,) = base["containers"], got["containers"]
    for key in ("resources", "readinessProbe", "livenessProbe", "securityContext", "ports"):
        assert gc[key] == bc[key], key
    assert {"name": "OMP_NUM_THREADS", "value": "4"} in gc["env"]
    assert got["serviceAccountName"] == "distilqa-serving" and got["maxReplicas"] == base["maxReplicas"]
    assert gc["image"] == "ghcr.io/distilqa/distilqa-serve:test"
    assert storage(got).startswith(f"s3://{BUCKET}/") and got["labels"]["distilqa.io/model-version"] == "1"
    assert obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert url == obj["status"]["components"]["predictor"]["url"]
    assert aliases(world) == {"champion": world["versions"]["v1"]}
    t = tags(world, "v1")
    assert t["rollout"] == "promoted" and float(t["probe_p95_ms"]) >= float(t["probe_p50_ms"]) > 0


def test_a_first_deploy_that_never_becomes_ready_leaves_nothing(world):
    reset(world, None)
    world["controller"].never_ready.add(deploy_uri(world, "v1"))
    with pytest.raises(Exception, match="not ready within 2s"):
        deploy(world, "v1", ready_timeout_s=2)
    assert world["api"].objects == {}
    assert [r["method"] for r in world["api"].requests].count("DELETE") == 1
    assert "champion" not in aliases(world) and tags(world, "v1")["rollout"] == "rolled_back"


def deploy_uri(world, label: str) -> str:
    from distilqa.components.deploy import storage_uri

    c = world["client"]
    return storage_uri(c.get_model_version_download_uri(NAME, world["versions"][label]), "s3://unused")


def test_a_canary_is_probed_directly_then_promoted_step_by_step(world):
    from distilqa.serving.rollout import Release, promoted_state, request_counts

    before = reset(world, "v1")
    stable_pod = world["controller"].pod_for(deploy_uri(world, "v1"))
    stable_before = request_counts(stable_pod.url, 5)
    promoted, detail, url = deploy(world, "v2", canary_steps=[10, 50, 100], bake_s=0.3)
    assert promoted and "10% -> 50% -> 100%" in detail, detail
    after = live(world)
    release = Release("ghcr.io/distilqa/distilqa-serve:test", deploy_uri(world, "v2"), NAME, "2", "fp32")
    assert canonical(after["spec"]) == canonical(promoted_state(before["spec"], release))
    assert "canary" not in after["spec"] and schema_errors(after) == []
    # promotion changed only the model's fields of the stable predictor
    (b,), (a,) = before["spec"]["predictor"]["containers"], after["spec"]["predictor"]["containers"]
    assert {k for k in a if a[k] != b[k]} == {"env"}  # STORAGE_URI; the image is the same here
    patches = [r["body"] for r in world["api"].requests if r["method"] == "PATCH"]
    traffic = [p["spec"]["canary"][0]["trafficPercent"] if p["spec"].get("canary") else None for p in patches]
    assert traffic == [10, 50, None]  # the last one promotes: canary removed, stable predictor changed
    assert all(p["metadata"]["resourceVersion"] for p in patches)  # each patch is conditional
    # the probe reached the canary's own pod; the stable pod (status.url) answered none of it
    canary_pod = world["controller"].pod_for(deploy_uri(world, "v2"))
    assert request_counts(canary_pod.url, 5)["ok"] >= 3 * PROBE  # two canary steps and the promoted check
    assert request_counts(stable_pod.url, 5)["ok"] == stable_before["ok"]
    # the counter the error-rate check reads: a bad request is the client's error, not the canary's
    counted = request_counts(canary_pod.url, 5)
    bad = urllib.request.Request(
        f"{canary_pod.url}/v1/models/{NAME}:predict", data=b'{"instances": [{"question": 3}]}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=10)
    assert refused.value.code == 400
    now = request_counts(canary_pod.url, 5)
    assert now["invalid"] == counted["invalid"] + 1 and now["error"] == counted["error"] == 0
    assert aliases(world) == {"champion": world["versions"]["v2"], "previous-champion": world["versions"]["v1"]}
    assert tags(world, "v2")["rollout"] == "promoted"


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ("never_ready", "challenger not ready within 3s"),
        ("failing", "BlockedByFailedLoad"),
        ("answers_differ", "probe answers at"),
        ("probe_timeout", "timed out"),
    ],
)
def test_a_failed_canary_is_rolled_back_to_the_exact_previous_spec(world, scenario, message):
    from distilqa.errors import DistilqaError

    before = reset(world, "v1")
    ctl, uri = world["controller"], deploy_uri(world, "v2")
    predictions, settings = None, {}
    if scenario == "never_ready":
        ctl.never_ready.add(uri)
        settings["ready_timeout_s"] = 3
    elif scenario == "failing":
        ctl.failing.add(uri)
    elif scenario == "answers_differ":  # the served model is not the one evaluated
        evaluated = json.loads(world["predictions"]["v2"].read_text())
        first = next(iter(evaluated))
        evaluated[first] = evaluated[first] + " (another model)"
        world["predictions"]["tampered"] = world["tmp"] / "predictions-tampered.json"
        world["predictions"]["tampered"].write_text(json.dumps(evaluated))
        predictions = "tampered"
    else:
        ctl.slow.add(uri)
        settings["probe_timeout_s"] = 1
    with pytest.raises(DistilqaError, match=message):
        deploy(world, "v2", predictions, **settings)
    after = live(world)
    assert canonical(after["spec"]) == canonical(before["spec"])  # byte for byte
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 2  # canary, then restore
    assert aliases(world) == {"champion": world["versions"]["v1"]}
    t = tags(world, "v2")
    assert t["rollout"] == "rolled_back" and message.split()[0] in t["rollout_detail"], t


STEP = """
import sys
from distilqa.components.deploy import run_deploy_cluster
run_deploy_cluster(sys.argv[1], sys.argv[2], sys.argv[3], {deploy}, {{"model_name": "{name}"}},
                   {{"serving_image": "ghcr.io/distilqa/distilqa-serve:test"}}, {tracking})
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_step_killed_mid_rollout_is_safe_and_its_rerun_promotes(world, sig):
    """SIGTERM (a pod stopped) rolls back on its way out; SIGKILL leaves the canary, and the rerun
    (KFP's retry) removes it first. Either way the rerun ends promoted."""
    before = reset(world, "v1")
    world["controller"].slow.add(deploy_uri(world, "v2"))
    world["controller"].slow_s = 60  # the step is stuck probing the canary when the signal comes
    settings = {"mode": "cluster", **FAST, "probe_timeout_s": 120}
    code = STEP.format(deploy=repr(settings), name=NAME, tracking=repr(world["tracking"]))
    args = [world["versions"]["v2"], world["dev"], str(world["predictions"]["v2"])]
    log = (world["tmp"] / f"step-{sig}.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=os.environ, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (live(world)["status"].get("canaryStatuses") or [{}])[0].get("ready"):
        assert proc.poll() is None, Path(log.name).read_text()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.5)  # now inside the probe
    proc.send_signal(sig)
    proc.wait(timeout=60)
    log.close()
    output = Path(log.name).read_text()
    if sig == signal.SIGTERM:
        assert "rolled back" in output, output
        assert canonical(live(world)["spec"]) == canonical(before["spec"])
        assert tags(world, "v2")["rollout"] == "rolled_back" and "signal 15" in tags(world, "v2")["rollout_detail"]
    else:
        assert live(world)["spec"].get("canary"), "SIGKILL cannot run a finally: the canary is left"
    assert aliases(world) == {"champion": world["versions"]["v1"]}
    world["controller"].slow.clear()
    world["controller"].slow_s = 5.0
    promoted, detail, _ = deploy(world, "v2")
    assert promoted, detail
    after = live(world)
    assert "canary" not in after["spec"] and storage(after["spec"]["predictor"]) == deploy_uri(world, "v2")
    assert aliases(world)["champion"] == world["versions"]["v2"]


def test_a_rerun_after_the_promotion_landed_only_moves_the_alias(world):
    """Killed between the promotion patch and the alias move: the rerun sees the stable predictor
    already serving the version, checks it answers, and makes it champion without another patch."""
    reset(world, "v1")
    deploy(world, "v2")
    world["client"].set_registered_model_alias(NAME, "champion", world["versions"]["v1"])
    world["api"].requests.clear()
    promoted, detail, _ = deploy(world, "v2")
    assert promoted and "already serves" in detail
    assert not [r for r in world["api"].requests if r["method"] != "GET"]
    assert aliases(world)["champion"] == world["versions"]["v2"]


def test_a_concurrent_edit_is_refused_not_overwritten(world):
    from distilqa.serving.rollout import InferenceServices, RolloutFailed

    reset(world, "v1")
    api = InferenceServices()
    stale = api.get(NAME, NS)
    api.apply_spec(stale, {**stale["spec"], "predictor": {**stale["spec"]["predictor"], "maxReplicas": 6}})
    with pytest.raises(RolloutFailed, match="changed by someone else"):
        api.apply_spec(stale, {**stale["spec"], "predictor": {**stale["spec"]["predictor"], "maxReplicas": 2}})
    # between the step's read and its patch, the resourceVersion precondition guards (the API's 409)
    old = {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}, "spec": {"canary": None}}
    with pytest.raises(RolloutFailed, match="409 Conflict"):
        api.patch(NAME, old, NS)
    assert live(world)["spec"]["predictor"]["maxReplicas"] == 6


def test_the_api_standin_refuses_objects_the_crd_rejects(world):
    from distilqa.serving.rollout import InferenceServices, RolloutFailed

    obj = reset(world, "v1")
    bad = {**obj["spec"], "canary": [{"trafficPercent": 150, "predictor": obj["spec"]["predictor"]}]}
    with pytest.raises(RolloutFailed, match="422"):
        InferenceServices().apply_spec(obj, bad)
    assert "canary" not in live(world)["spec"]


def test_a_knative_mode_service_is_refused_untouched(world):
    """In Knative mode spec.canary would be ignored and all traffic would move at once: refuse it."""
    from distilqa.errors import DistilqaError

    obj = reset(world, "v1")
    del obj["status"]
    obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"
    world["api"].objects.clear()
    world["api"].put(obj)
    world["api"].requests.clear()
    with pytest.raises(DistilqaError, match="Knative mode; distilqa rolls out in Standard mode only"):
        deploy(world, "v2")
    assert [r["method"] for r in world["api"].requests] == ["GET"]
    assert aliases(world) == {"champion": world["versions"]["v1"]}
