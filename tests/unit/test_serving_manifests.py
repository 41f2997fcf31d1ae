"""The serving manifests, the deploy step's InferenceService states and the image, validated offline:
kustomize builds, the CRD schema, Standard-mode canary rules."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from distilqa.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "manifests" / "serving"
SCHEMA = json.loads((ROOT / "tests" / "data" / "schemas" / "inferenceservice_v1beta1.schema.json").read_text())
URI = "s3://distilqa-mlflow/artifacts/1/models/m-abc/artifacts"


def build(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def states() -> dict[str, dict]:
    """Every InferenceService state the deploy step applies (distilqa.serving.rollout)."""
    from distilqa.pipelines.profile import Deploy
    from distilqa.serving.rollout import Release, canary_state, first_state, promoted_state

    d = Deploy()
    one = Release("ghcr.io/distilqa/distilqa-serve:0.1.0", URI, "tinyroberta-squad2", "1", "fp32")
    two = Release("ghcr.io/distilqa/distilqa-serve:0.2.0", URI.replace("m-abc", "m-def"), one.served_name, "2", "int8")
    first = first_state(one, d.namespace, d.service_name, d.service_account)
    canary = {**first, "spec": canary_state(first["spec"], two, 10)}
    promoted = {**first, "spec": promoted_state(first["spec"], two)}
    return {"first": first, "canary": canary, "promoted": promoted}


def test_the_serving_base_builds_without_an_inference_service_or_secret():
    docs = build(SERVING / "base")
    # the deploy step creates the InferenceService; docs/runbook.md step 5 creates distilqa-s3
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Namespace", "NetworkPolicy"}
    assert all(d["metadata"].get("namespace") == "distilqa" for d in docs if d["kind"] != "Namespace")


@pytest.mark.parametrize("name", ["first", "canary", "promoted"])
def test_every_state_of_the_rollout_validates_against_the_crd(name):
    jsonschema.Draft7Validator(SCHEMA).validate(states()[name])


def test_the_schema_really_rejects_bad_objects():
    service = states()["canary"]
    service["spec"]["canary"][0]["trafficPercent"] = 150
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(service)


def test_the_states_fit_the_serving_base_and_standard_mode():
    from distilqa.pipelines.profile import Deploy

    docs = build(SERVING / "base")
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    policy = next(d for d in docs if d["metadata"]["name"] == "predictor-from-gateways")
    for service in states().values():
        assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        assert service["metadata"]["namespace"] == account["metadata"]["namespace"] == Deploy().namespace
        assert (
            policy["spec"]["podSelector"]["matchLabels"]["serving.kserve.io/inferenceservice"] == Deploy().service_name
        )
        predictors = [service["spec"]["predictor"]] + [c["predictor"] for c in service["spec"].get("canary", [])]
        for predictor in predictors:
            assert "canaryTrafficPercent" not in predictor  # silently ignored in Standard mode
            assert predictor["serviceAccountName"] == account["metadata"]["name"]
    canary = states()["canary"]["spec"]
    assert canary["canary"][0]["predictor"]["name"] != canary["predictor"]["name"]


@pytest.mark.parametrize("name", ["first", "canary", "promoted"])
def test_containers_run_distilqa_serve_with_valid_flags(name):
    service = states()[name]
    predictors = [service["spec"]["predictor"]] + [c["predictor"] for c in service["spec"].get("canary", [])]
    for predictor in predictors:
        (container,) = predictor["containers"]
        args = build_parser().parse_args(["serve", *container["args"]])
        assert args.host == "0.0.0.0"  # reachable from the pod network, unlike the local default
        assert args.port == container["ports"][0]["containerPort"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["STORAGE_URI"].startswith("s3://")  # KServe cannot read models:/ URIs
        assert container["image"].startswith("ghcr.io/distilqa/distilqa-serve:")
        version = predictor["labels"]["distilqa.io/model-version"]
        assert args.precision == ("fp32" if version == "1" else "int8")


def test_dockerfile_runs_the_serve_command_with_valid_defaults():
    text = (ROOT / "serving" / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert entry == ["distilqa", "serve"]
    args = build_parser().parse_args([entry[1], *cmd])
    assert args.model == "/mnt/models" and args.host == "0.0.0.0" and args.port == 8080
    assert "download.pytorch.org/whl/cpu" in text  # never the multi-GB CUDA wheel in a CPU image
    assert re.search(r"^USER 1000$", text, re.M)


CREDENTIAL = re.compile(
    r"(AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]\s*\S{8,}|password\s*[:=]\s*['\"]?\w{6,})", re.I
)


def test_no_credentials_in_manifests():
    for path in [*SERVING.rglob("*.yaml"), ROOT / "serving" / "inferenceservice.yaml"]:
        for line in path.read_text().splitlines():
            assert not CREDENTIAL.search(line), f"{path}: {shlex.quote(line)}"
    account = next(d for d in build(SERVING / "base") if d["kind"] == "ServiceAccount")
    assert account["secrets"] == [{"name": "distilqa-s3"}]  # created by the runbook, with its S3 annotations


def test_storage_uri_maps_mlflow_artifacts_to_the_bucket():
    from distilqa.components.deploy import storage_uri

    uri = storage_uri("mlflow-artifacts:/1/models/m-abc/artifacts", "s3://distilqa-mlflow-1234/artifacts")
    assert uri == "s3://distilqa-mlflow-1234/artifacts/1/models/m-abc/artifacts"
    assert storage_uri("gs://b/x", "unused") == "gs://b/x"
    with pytest.raises(ValueError, match="KServe cannot pull"):
        storage_uri("file:///tmp/model", "s3://b")
