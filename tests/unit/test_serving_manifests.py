"""The serving manifests and image, validated offline: kustomize builds, the CRD schema, canary rules."""

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
OVERLAYS = {
    "base": SERVING / "base",
    "canary": SERVING / "overlays" / "canary",
    "knative": SERVING / "overlays" / "knative",
}


def build(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def isvc(docs: list[dict]) -> dict:
    (found,) = [d for d in docs if d["kind"] == "InferenceService"]
    return found


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_overlay_builds_and_validates_against_the_crd(name):
    docs = build(OVERLAYS[name])
    service = isvc(docs)
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    jsonschema.Draft7Validator(SCHEMA).validate(service)
    # no Secret: docs/runbook.md step 5 creates distilqa-s3 with its annotations (and keys on-prem)
    assert {d["kind"] for d in docs} == {"InferenceService", "ServiceAccount", "Namespace", "NetworkPolicy"}
    assert all(d["metadata"].get("namespace") == "distilqa" for d in docs if d["kind"] != "Namespace")


def test_the_schema_really_rejects_bad_objects():
    service = isvc(build(OVERLAYS["canary"]))
    service["spec"]["canary"][0]["trafficPercent"] = 150
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(service)


def test_canary_fields_match_the_deployment_mode():
    standard, canary, knative = (isvc(build(OVERLAYS[n])) for n in ("base", "canary", "knative"))
    for service in (standard, canary):
        assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
        assert "canaryTrafficPercent" not in service["spec"]["predictor"]  # silently ignored in Standard mode
    assert canary["spec"]["canary"][0]["trafficPercent"] == 10
    assert canary["spec"]["canary"][0]["predictor"]["name"] != canary["spec"]["predictor"]["name"]
    assert knative["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert knative["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "canary" not in knative["spec"]  # spec.canary is Standard-mode only


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_containers_run_distilqa_serve_with_valid_flags(name):
    service = isvc(build(OVERLAYS[name]))
    predictors = [service["spec"]["predictor"]] + [c["predictor"] for c in service["spec"].get("canary", [])]
    for predictor in predictors:
        (container,) = predictor["containers"]
        args = build_parser().parse_args(["serve", *container["args"]])
        assert args.host == "0.0.0.0"  # reachable from the pod network, unlike the local default
        assert args.port == container["ports"][0]["containerPort"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["STORAGE_URI"].startswith("s3://")  # KServe cannot read models:/ URIs
        assert container["image"].startswith("ghcr.io/distilqa/distilqa-serve:")
        assert predictor["serviceAccountName"] == "distilqa-serving"


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
    for path in SERVING.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            assert not CREDENTIAL.search(line), f"{path}: {shlex.quote(line)}"
    account = next(d for d in build(OVERLAYS["base"]) if d["kind"] == "ServiceAccount")
    assert account["secrets"] == [{"name": "distilqa-s3"}]  # created by the runbook, with its S3 annotations


def test_the_deploy_steps_canary_patch_is_a_valid_inference_service():
    """What components/deploy.py patches into the cluster's InferenceService passes the CRD schema."""
    from distilqa.components.deploy import canary_spec, storage_uri
    from distilqa.pipelines.profile import load_profile

    deploy = vars(load_profile("production").deploy)
    uri = storage_uri("mlflow-artifacts:/1/models/m-abc/artifacts", "s3://distilqa-mlflow-1234/artifacts")
    assert uri == "s3://distilqa-mlflow-1234/artifacts/1/models/m-abc/artifacts"
    assert storage_uri("gs://b/x", "unused") == "gs://b/x"
    with pytest.raises(ValueError, match="KServe cannot pull"):
        storage_uri("file:///tmp/model", "s3://b")
    service = isvc(build(OVERLAYS["base"]))
    service["spec"]["canary"] = [
        canary_spec(deploy, "ghcr.io/distilqa/distilqa-serve:0.1.0", uri, "tinyroberta-squad2")
    ]
    jsonschema.Draft7Validator(SCHEMA).validate(service)
    (container,) = service["spec"]["canary"][0]["predictor"]["containers"]
    args = build_parser().parse_args(["serve", *container["args"]])
    assert args.host == "0.0.0.0" and args.precision == deploy["precision"]
    assert service["spec"]["canary"][0]["trafficPercent"] == deploy["canary_percent"] == 10
