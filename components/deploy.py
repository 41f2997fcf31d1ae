"""deploy: roll the registered version out, probe it, then promote it to `champion` or roll back.

Cluster: create or patch the KServe InferenceService (Standard mode; the new version as a named
canary predictor with `canary_percent` of traffic, storageUri resolved from MLflow to s3://), wait
until ready, probe the canary with dev questions (answers must equal the evaluated predictions),
then make it the stable predictor or remove it. Local: start `distilqa serve` on loopback with the
registered artifacts, probe it the same way, report its URL.
"""

from typing import NamedTuple

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def probe(url: str, name: str, dev_path: str, predictions: dict, count: int) -> tuple[bool, str]:
    from distilqa.serving.client import ask

    from distilqa.squad import load_squad

    examples = load_squad(dev_path).examples()[:count]
    got = ask(url, [{"question": e.question, "context": e.context} for e in examples], name)["predictions"]
    wrong = [e.id for e, g in zip(examples, got, strict=True) if g["answer"] != predictions[e.id]]
    if wrong:
        return (
            False,
            f"{len(wrong)} of {len(examples)} probe answers differ from the evaluated ones (first: {wrong[0]})",
        )
    return True, f"{len(examples)} probe answers equal the evaluated ones"


def storage_uri(source: str, artifacts_destination: str) -> str:
    """KServe reads s3:// (and gs:// on GKE), not models:/ or mlflow-artifacts:/ URIs."""
    if source.startswith("mlflow-artifacts:/"):
        return artifacts_destination.rstrip("/") + "/" + source.removeprefix("mlflow-artifacts:/").lstrip("/")
    if not source.startswith(("s3://", "gs://")):
        raise ValueError(f"{source}: the model's artifacts are not in S3 or GCS; KServe cannot pull them")
    return source


def canary_spec(d: dict, image: str, uri: str, name: str) -> dict:
    container = {
        "name": "kserve-container",
        "image": image,
        "args": ["/mnt/models", "--host", "0.0.0.0", "--port", "8080", "--name", name, "--precision", d["precision"]],
        "env": [{"name": "STORAGE_URI", "value": uri}],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
    }
    return {
        "trafficPercent": d["canary_percent"],
        "predictor": {"name": "challenger", "serviceAccountName": d["service_account"], "containers": [container]},
    }


def run_deploy_local(
    version: str, dev_path: str, predictions_path: str, deploy: dict, registry: dict, tracking: dict, log_path: str
) -> tuple[bool, str, str]:
    import json

    from distilqa.pipelines.profile import build_section
    from distilqa.serving.process import ServerProcess

    from distilqa.registry import client, model_dir_of, promote

    d, r = build_section("deploy", deploy), build_section("registry", registry)
    c = client(tracking.get("uri", ""))
    model_dir = model_dir_of(c, r.model_name, version)
    predictions = json.loads(open(predictions_path).read())
    with ServerProcess(model_dir, "--precision", d.precision, "--name", r.model_name, log=log_path) as server:
        ok, detail = probe(server.url, r.model_name, dev_path, predictions, d.probe_questions)
        url = server.url
    if ok:
        old = promote(c, r.model_name, version)
        return True, f"{detail}; champion {old or '(none)'} -> {version}", url
    c.set_model_version_tag(r.model_name, version, "probe_failed", detail)
    return False, f"{detail}; champion unchanged", url


class InferenceServices:
    """Get and merge-patch InferenceServices with the kubernetes client (in-cluster, else the kubeconfig).

    KServeClient.patch accepts only its model classes, not the plain dicts the steps build, so the
    custom-objects API is called directly; a dict body goes out as application/merge-patch+json.
    """

    GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"

    def __init__(self) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self._api = client.CustomObjectsApi()

    def get(self, name: str, namespace: str) -> dict:
        return self._api.get_namespaced_custom_object(self.GROUP, self.VERSION, namespace, self.PLURAL, name)

    def patch(self, name: str, body: dict, namespace: str) -> dict:
        return self._api.patch_namespaced_custom_object(self.GROUP, self.VERSION, namespace, self.PLURAL, name, body)


def remove_canary(service_name: str, namespace: str) -> bool:
    """Drop spec.canary from the InferenceService if one is there; True when something was removed."""
    isvc = InferenceServices()
    if not isvc.get(service_name, namespace).get("spec", {}).get("canary"):
        return False
    isvc.patch(service_name, {"spec": {"canary": None}}, namespace)
    return True


def run_deploy_cluster(
    version: str, dev_path: str, predictions_path: str, deploy: dict, registry: dict, resources: dict, tracking: dict
) -> tuple[bool, str, str]:
    import json
    import time

    from distilqa.pipelines.profile import build_section
    from kserve import KServeClient

    from distilqa.registry import client, promote

    d, r = build_section("deploy", deploy), build_section("registry", registry)
    res = build_section("resources", resources)
    c = client(tracking.get("uri", ""))
    uri = storage_uri(c.get_model_version_download_uri(r.model_name, version), d.artifacts_destination)
    ks, isvcs = KServeClient(), InferenceServices()
    canary = canary_spec(deploy, res.serving_image, uri, r.model_name)
    isvcs.patch(d.service_name, {"spec": {"canary": [canary]}}, d.namespace)
    ks.wait_isvc_ready(d.service_name, namespace=d.namespace, timeout_seconds=d.ready_timeout_s)
    isvc = ks.get(d.service_name, namespace=d.namespace)
    url = isvc["status"].get("components", {}).get("canary", {}).get("url") or isvc["status"]["url"]
    predictions = json.loads(open(predictions_path).read())
    ok, detail = probe(url, r.model_name, dev_path, predictions, d.probe_questions)
    if ok:
        stable = {"spec": {"canary": None, "predictor": {"containers": [{**canary["predictor"]["containers"][0]}]}}}
        isvcs.patch(d.service_name, stable, d.namespace)
        time.sleep(1)
        ks.wait_isvc_ready(d.service_name, namespace=d.namespace, timeout_seconds=d.ready_timeout_s)
        old = promote(c, r.model_name, version)
        return True, f"{detail}; promoted, champion {old or '(none)'} -> {version}", url
    remove_canary(d.service_name, d.namespace)
    c.set_model_version_tag(r.model_name, version, "probe_failed", detail)
    return False, f"{detail}; canary removed (rolled back)", url


@component(base_image=BASE_IMAGE)
def deploy_op(
    version: str,
    dev: dsl.Input[dsl.Dataset],
    predictions: dsl.Input[dsl.Artifact],
    deploy: dict,
    registry: dict,
    resources: dict,
    tracking: dict,
    log: dsl.Output[dsl.Artifact],
) -> NamedTuple("Outputs", promoted=bool, detail=str, url=str):
    from distilqa.components import failing_step

    with failing_step("deploy"):
        from collections import namedtuple

        from distilqa.components.deploy import run_deploy_cluster, run_deploy_local

        if not version:
            print("deploy: nothing to deploy (no version was registered)")
            return namedtuple("Outputs", ["promoted", "detail", "url"])(False, "no version registered", "")
        if deploy.get("mode", "local") == "cluster":
            promoted, detail, url = run_deploy_cluster(
                version, dev.path, predictions.path, deploy, registry, resources, tracking
            )
        else:
            promoted, detail, url = run_deploy_local(
                version, dev.path, predictions.path, deploy, registry, tracking, log.path
            )
        print(f"deploy: {'promoted' if promoted else 'rolled back'}: {detail}")
        return namedtuple("Outputs", ["promoted", "detail", "url"])(promoted, detail, url)
