"""deploy: roll the registered version out, probe it, then promote it to `champion` or roll back.

Cluster: distilqa.serving.rollout creates the KServe InferenceService on first deploy, else runs the
version as a canary through `canary_steps`, probing the canary's own URL with dev questions (answers
must equal the evaluated predictions) and checking its error rate, then promotes it; any failure
restores the previous spec. Local: start `distilqa serve` on loopback with the registered artifacts
and probe it the same way. Either way the model version is tagged with the outcome and the probe's
latency, and `champion` moves only after a promotion.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def storage_uri(source: str, artifacts_destination: str) -> str:
    """KServe reads s3:// (and gs:// on GKE), not models:/ or mlflow-artifacts:/ URIs."""
    if source.startswith("mlflow-artifacts:/"):
        return artifacts_destination.rstrip("/") + "/" + source.removeprefix("mlflow-artifacts:/").lstrip("/")
    if not source.startswith(("s3://", "gs://")):
        raise ValueError(f"{source}: the model's artifacts are not in S3 or GCS; KServe cannot pull them")
    return source


def _checker(dev_path: str, predictions_path: str, served_name: str, d: Any) -> Callable[[str], Any]:
    """check(url): the first `probe_questions` dev questions asked at `url` must get the evaluated answers."""
    import json

    from distilqa.serving.rollout import probe_answers

    from distilqa.squad import load_squad

    examples = load_squad(dev_path).examples()[: d.probe_questions]
    expected = json.loads(open(predictions_path).read())
    return lambda url: probe_answers(url, served_name, examples, expected, d.probe_timeout_s)


def _record(c: Any, name: str, version: str, outcome: str, detail: str, probe: Any = None) -> None:
    """Tags on the model version: what the rollout did and why, and the probe's latency."""
    c.set_model_version_tag(name, version, "rollout", outcome)
    c.set_model_version_tag(name, version, "rollout_detail", detail[:4000])
    if probe is not None:
        c.set_model_version_tag(name, version, "probe_p50_ms", f"{probe.percentile(0.5):.1f}")
        c.set_model_version_tag(name, version, "probe_p95_ms", f"{probe.percentile(0.95):.1f}")


def run_deploy_local(
    version: str, dev_path: str, predictions_path: str, deploy: dict, registry: dict, tracking: dict, log_path: str
) -> tuple[bool, str, str]:
    from distilqa.pipelines.profile import build_section
    from distilqa.serving.process import ServerProcess
    from distilqa.serving.rollout import RolloutFailed

    from distilqa.registry import client, model_dir_of, promote

    d, r = build_section("deploy", deploy), build_section("registry", registry)
    c = client(tracking.get("uri", ""))
    model_dir = model_dir_of(c, r.model_name, version)
    check = _checker(dev_path, predictions_path, r.model_name, d)
    with ServerProcess(model_dir, "--precision", d.precision, "--name", r.model_name, log=log_path) as server:
        url = server.url
        try:
            probe = check(url)
        except RolloutFailed as exc:
            _record(c, r.model_name, version, "rolled_back", str(exc))
            return False, f"{exc}; champion unchanged", url
    old = promote(c, r.model_name, version)
    _record(c, r.model_name, version, "promoted", probe.summary(), probe)
    return True, f"{probe.summary()}; champion {old or '(none)'} -> {version}", url


def run_deploy_cluster(
    version: str, dev_path: str, predictions_path: str, deploy: dict, registry: dict, resources: dict, tracking: dict
) -> tuple[bool, str, str]:
    """Roll `version` out to the InferenceService (distilqa.serving.rollout); move `champion` only once
    it serves. A rollback tags the version with why and fails the step, so the run shows it."""
    from distilqa.pipelines.profile import build_section
    from distilqa.serving.rollout import InferenceServices, Release, Rollout

    from distilqa.registry import client, promote

    d, r = build_section("deploy", deploy), build_section("registry", registry)
    res = build_section("resources", resources)
    c = client(tracking.get("uri", ""))
    uri = storage_uri(c.get_model_version_download_uri(r.model_name, version), d.artifacts_destination)
    release = Release(res.serving_image, uri, r.model_name, version, d.precision)
    rollout = Rollout(InferenceServices(), d, release, _checker(dev_path, predictions_path, r.model_name, d))
    try:
        outcome = rollout.run()
    except BaseException as exc:
        _record(c, r.model_name, version, "rolled_back", str(exc) or type(exc).__name__)
        raise
    old = promote(c, r.model_name, version)
    _record(c, r.model_name, version, "promoted", outcome.detail, outcome.probe)
    return True, f"{outcome.detail}; champion {old or '(none)'} -> {version}", outcome.url


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
