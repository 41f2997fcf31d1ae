"""Roll a registered model version out to a KServe InferenceService: canary, probe, promote or roll back.

Why it is built this way:
- Every state is a whole object. The first deploy creates the InferenceService from
  serving/inferenceservice.yaml; later states start from the live object, so resources, probes,
  securityContext, env and the service account (and an operator's edits to them) are kept, and only
  the model's fields change (`with_release`). Each change goes out as the RFC 7386 merge patch that
  turns the live spec into the target spec, with the live resourceVersion as a precondition, so a
  concurrent edit is refused (409) rather than overwritten.
- The stable predictor changes in one patch only: the promotion, which also removes the canary. So
  whenever a canary is present the stable predictor still serves the previous champion, and a rerun
  after a killed step restores it by dropping the canary.
- Readiness counts only when the controller has observed the generation this step applied; a Ready
  condition left over from the previous generation does not count.
- The probe addresses the canary predictor's own component URL, never status.url (the traffic split).
- Any failure after the canary starts, an exception or SIGTERM included, restores the previous spec
  in a `finally` (the first deploy: deletes what it created) and surfaces as `RolloutFailed`.

KServe Standard (RawDeployment) mode only: its `spec.canary` gives the canary a name and a Service of
its own; Knative's `canaryTrafficPercent` is ignored in this mode (docs/runbook.md, "The rollout").
"""

from __future__ import annotations

import copy
import math
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from distilqa.errors import DistilqaError

CANARY = "challenger"  # the canary predictor's name, and its key in status.components / canaryStatuses
STABLE = "predictor"  # the stable predictor's key in status.components
MODEL_LABEL = "distilqa.io/model-version"
FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")
STANDARD_MODES = ("Standard", "RawDeployment")  # the annotation's value; RawDeployment is its older name


class RolloutFailed(DistilqaError):
    """The rollout did not promote; the InferenceService is back where it was."""


@dataclass(frozen=True)
class Release:
    """What one model version sets in a predictor; everything else comes from the live object."""

    image: str
    storage_uri: str
    served_name: str
    version: str
    precision: str


@dataclass(frozen=True)
class ProbeResult:
    questions: int
    latencies_ms: tuple[float, ...]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else 0.0

    def summary(self) -> str:
        return (
            f"{self.questions} probe answers equal the evaluated ones "
            f"(p50 {self.percentile(0.5):.1f} ms, p95 {self.percentile(0.95):.1f} ms per question)"
        )


# ---- states ------------------------------------------------------------------------------------------


def template() -> dict[str, Any]:
    from importlib import resources

    import yaml

    return yaml.safe_load(resources.files("distilqa.serving").joinpath("inferenceservice.yaml").read_text())


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    if flag in out[:-1]:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def with_release(predictor: dict[str, Any], release: Release, name: str) -> dict[str, Any]:
    """A copy of `predictor` named `name` serving `release`; nothing else changes."""
    out = copy.deepcopy(predictor)
    containers = out.get("containers") or []
    if len(containers) != 1:
        raise RolloutFailed(f"the predictor has {len(containers)} containers; distilqa manages exactly one")
    (container,) = containers
    out["name"] = name
    out["labels"] = {**(out.get("labels") or {}), MODEL_LABEL: release.version}
    container["image"] = release.image
    args = _set_flag(container.get("args") or [], "--name", release.served_name)
    container["args"] = _set_flag(args, "--precision", release.precision)
    env = [e for e in container.get("env") or [] if e.get("name") != "STORAGE_URI"]
    container["env"] = [{"name": "STORAGE_URI", "value": release.storage_uri}, *env]
    return out


def serves(predictor: dict[str, Any], release: Release) -> bool:
    """Whether `predictor` already runs `release` (a rerun after the promotion patch landed)."""
    return with_release(predictor, release, predictor.get("name", "stable")) == predictor


def first_state(release: Release, namespace: str, name: str, service_account: str) -> dict[str, Any]:
    obj = template()
    obj["metadata"].update(name=name, namespace=namespace)
    obj["spec"]["predictor"]["serviceAccountName"] = service_account
    obj["spec"]["predictor"] = with_release(obj["spec"]["predictor"], release, obj["spec"]["predictor"]["name"])
    return obj


def canary_state(spec: dict[str, Any], release: Release, percent: int) -> dict[str, Any]:
    """`spec` (without a canary) plus the release as a canary predictor taking `percent` of traffic."""
    out = copy.deepcopy(spec)
    out["canary"] = [{"trafficPercent": percent, "predictor": with_release(spec["predictor"], release, CANARY)}]
    return out


def promoted_state(spec: dict[str, Any], release: Release) -> dict[str, Any]:
    """`spec` with the stable predictor serving the release and no canary."""
    out = copy.deepcopy(spec)
    out.pop("canary", None)
    out["predictor"] = with_release(spec["predictor"], release, spec["predictor"].get("name", "stable"))
    return out


def without_canary(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in spec.items() if k != "canary"}


def merge_diff(current: Any, target: Any) -> Any:
    """The RFC 7386 merge patch that turns `current` into `target` (null removes a key)."""
    if not (isinstance(current, dict) and isinstance(target, dict)):
        return copy.deepcopy(target)
    patch: dict[str, Any] = {key: None for key in current if key not in target}
    for key, value in target.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif current[key] != value:
            patch[key] = merge_diff(current[key], value)
    return patch


# ---- status ------------------------------------------------------------------------------------------


def readiness(status: dict[str, Any], generation: int, component: str) -> tuple[str, str]:
    """("ready", component URL), ("waiting", why) or ("failed", why) for one component at `generation`."""
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return "waiting", f"the controller has observed generation {observed}, not yet {generation}"
    if component == STABLE:
        model_status, ready = status.get("modelStatus") or {}, _condition(status, "Ready")
    else:
        entry = next((c for c in status.get("canaryStatuses") or [] if c.get("name") == component), None)
        if entry is None:
            return "waiting", f"no canary status for {component!r} yet"
        model_status, ready = entry.get("modelStatus") or {}, bool(entry.get("ready"))
    if model_status.get("transitionStatus") in FAILED_TRANSITIONS:
        info = model_status.get("lastFailureInfo") or {}
        why = info.get("message") or info.get("reason") or model_status["transitionStatus"]
        return "failed", f"{component} failed: {model_status['transitionStatus']}: {why}"
    url = ((status.get("components") or {}).get(component) or {}).get("url")
    if not ready:
        return "waiting", f"{component} is not ready"
    if not url:
        return "waiting", f"{component} is ready but status.components has no URL for it"
    return "ready", url


def _condition(status: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def request_counts(url: str, timeout: float) -> dict[str, float]:
    """The predictor's distilqa_requests_total by outcome, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    counts = {"ok": 0.0, "invalid": 0.0, "error": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "distilqa_requests_total":
                counts[sample.labels.get("outcome", "")] = sample.value
    return counts


def error_rate(before: dict[str, float], after: dict[str, float]) -> tuple[float, int]:
    """(share of 5xx among the requests between two readings, how many requests); invalid (4xx) excluded.
    A reading from another replica behind the Service can go backwards: then `after` is taken alone."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("ok", "error")}
    if min(delta.values()) < 0:
        delta = {k: after.get(k, 0.0) for k in ("ok", "error")}
    total = delta["ok"] + delta["error"]
    return (delta["error"] / total if total else 0.0), int(total)


# ---- the Kubernetes API ------------------------------------------------------------------------------


class InferenceServices:
    """InferenceServices through the kubernetes client's custom-objects API (in-cluster, else the kubeconfig).

    KServeClient.patch accepts only its model classes, not the plain dicts built here, so the
    custom-objects API is called directly; a dict body goes out as application/merge-patch+json.
    """

    GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"

    def __init__(self) -> None:
        import os

        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            # the client reads $KUBECONFIG once, at import; read it now, as kubectl does
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        self._api = client.CustomObjectsApi()

    def _call(self, what: str, method: str, *args: Any, absent: Any = ...) -> Any:
        """The API call; an error becomes RolloutFailed naming it, a 404 becomes `absent` when one is given."""
        from kubernetes.client.rest import ApiException

        try:
            return getattr(self._api, method)(self.GROUP, self.VERSION, *args)
        except ApiException as exc:
            if exc.status == 404 and absent is not ...:
                return absent
            raise RolloutFailed(f"{what}: Kubernetes API {exc.status} {exc.reason}: {_message(exc.body)}") from None

    def find(self, name: str, namespace: str) -> dict[str, Any] | None:
        get = "get_namespaced_custom_object"
        return self._call(f"get {namespace}/{name}", get, namespace, self.PLURAL, name, absent=None)

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        found = self.find(name, namespace)
        if found is None:
            raise RolloutFailed(f"InferenceService {namespace}/{name} does not exist")
        return found

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        return self._call(f"create {ns}/{name}", "create_namespaced_custom_object", ns, self.PLURAL, body)

    def patch(self, name: str, body: dict[str, Any], namespace: str) -> dict[str, Any]:
        return self._call(
            f"patch {namespace}/{name}", "patch_namespaced_custom_object", namespace, self.PLURAL, name, body
        )

    def delete(self, name: str, namespace: str) -> None:
        self._call(f"delete {namespace}/{name}", "delete_namespaced_custom_object", namespace, self.PLURAL, name)

    def apply_spec(self, live: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the object to `spec`, on condition that nobody changed its spec since `live` was read.

        The controller's status writes bump resourceVersion too, so the object is read again: a spec
        other than `live`'s is someone else's edit and is not overwritten; the fresh resourceVersion
        then guards the moment between that read and the patch (409 Conflict)."""
        meta = live["metadata"]
        fresh = self.get(meta["name"], meta["namespace"])
        if fresh["spec"] != live["spec"]:
            raise RolloutFailed(
                f"InferenceService {meta['namespace']}/{meta['name']} was changed by someone else during the rollout "
                f"(generation {meta.get('generation')} -> {fresh['metadata'].get('generation')}); not overwriting it"
            )
        version = fresh["metadata"].get("resourceVersion")
        body = {"metadata": {"resourceVersion": version}, "spec": merge_diff(fresh["spec"], spec)}
        return self.patch(meta["name"], body, meta["namespace"])


def _message(body: Any) -> str:
    import json

    try:
        return json.loads(body).get("message", body)
    except (TypeError, ValueError, AttributeError):
        return str(body)


def remove_canary(service_name: str, namespace: str) -> bool:
    """Drop spec.canary from the InferenceService if one is there; True when something was removed."""
    api = InferenceServices()
    live = api.find(service_name, namespace)
    if live is None or not live.get("spec", {}).get("canary"):
        return False
    api.apply_spec(live, without_canary(live["spec"]))
    return True


# ---- the rollout -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    detail: str
    url: str
    probe: ProbeResult
    first: bool


class _Terminated(BaseException):
    """SIGTERM (a pod being stopped) during a rollout: unwinds through the `finally` that rolls back."""


class Rollout:
    """One rollout of `release` per the deploy settings. `check(url)` probes one predictor URL and
    raises RolloutFailed on a wrong answer; it returns what it measured."""

    def __init__(
        self,
        api: InferenceServices,
        settings: Any,  # distilqa.pipelines.profile.Deploy
        release: Release,
        check: Callable[[str], ProbeResult],
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api, self.d, self.release, self.check, self.log, self.sleep = api, settings, release, check, log, sleep

    def run(self) -> Outcome:
        on_main = threading.current_thread() is threading.main_thread()
        previous_handler = signal.signal(signal.SIGTERM, _raise_terminated) if on_main else None
        try:
            return self._run()
        finally:
            if on_main:
                signal.signal(signal.SIGTERM, previous_handler)

    def _run(self) -> Outcome:
        d = self.d
        live = self.api.find(d.service_name, d.namespace)
        if live is None:
            return self._first_deploy()
        annotated = (live["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode")
        mode = annotated or (live.get("status") or {}).get("deploymentMode", "")  # else the cluster's default
        if mode not in STANDARD_MODES:
            raise RolloutFailed(
                f"InferenceService {d.namespace}/{d.service_name} is in {mode or 'an unknown'} mode; "
                "distilqa rolls out in Standard mode only, where spec.canary is honoured (docs/runbook.md)"
            )
        if live["spec"].get("canary"):
            self.log("deploy: a canary from an interrupted rollout is in the InferenceService; removing it first")
            live = self.api.apply_spec(live, without_canary(live["spec"]))
        if serves(live["spec"]["predictor"], self.release):
            url = self._wait(live, STABLE)
            probe = self.check(url)
            return Outcome(f"version {self.release.version} already serves; {probe.summary()}", url, probe, False)
        previous = copy.deepcopy(live["spec"])
        with _undone_unless_finished(lambda: self._restore(previous)):
            for percent in d.canary_steps[:-1]:
                live = self.api.apply_spec(live, canary_state(previous, self.release, percent))
                self.log(f"deploy: canary at {percent}% (generation {live['metadata']['generation']})")
                self._step(self._wait(live, CANARY), percent)
            live = self.api.apply_spec(live, promoted_state(previous, self.release))
            self.log(f"deploy: promoting (generation {live['metadata']['generation']})")
            url = self._wait(live, STABLE)
            probe = self.check(url)  # the promoted pods run the new model: they answer as it was evaluated
            steps = " -> ".join(f"{p}%" for p in d.canary_steps)
            return Outcome(f"canary {steps}; {probe.summary()}", url, probe, False)

    def _first_deploy(self) -> Outcome:
        d = self.d
        obj = first_state(self.release, d.namespace, d.service_name, d.service_account)
        created = self.api.create(obj)
        self.log(f"deploy: created InferenceService {d.namespace}/{d.service_name}")

        def delete() -> None:
            self.log(f"deploy: first deploy failed; deleting {d.namespace}/{d.service_name}")
            self.api.delete(d.service_name, d.namespace)

        with _undone_unless_finished(delete):
            url = self._wait(created, STABLE)
            probe = self.check(url)
            return Outcome(f"first deploy; {probe.summary()}", url, probe, True)

    def _wait(self, applied: dict[str, Any], component: str) -> str:
        """The component's URL once the controller reports it ready at the applied generation."""
        generation = int(applied["metadata"].get("generation") or 1)
        deadline = time.monotonic() + self.d.ready_timeout_s
        while True:
            live = self.api.get(self.d.service_name, self.d.namespace)
            state, detail = readiness(live.get("status") or {}, generation, component)
            if state == "ready":
                return detail
            if state == "failed":
                raise RolloutFailed(detail)
            if time.monotonic() >= deadline:
                raise RolloutFailed(f"{component} not ready within {self.d.ready_timeout_s}s: {detail}")
            self.sleep(self.d.poll_s)

    def _step(self, url: str, percent: int) -> ProbeResult:
        """Probe the canary, let it take live traffic for bake_s, then check its error rate."""
        before = request_counts(url, self.d.probe_timeout_s)
        probe = self.check(url)
        if self.d.bake_s:
            self.sleep(self.d.bake_s)
        rate, requests = error_rate(before, request_counts(url, self.d.probe_timeout_s))
        if rate > self.d.max_error_rate:
            raise RolloutFailed(
                f"canary at {percent}%: {rate:.1%} of {requests} requests failed (max {self.d.max_error_rate:.1%})"
            )
        self.log(f"deploy: canary at {percent}% passed: {probe.summary()}; error rate {rate:.1%} of {requests}")
        return probe

    def _restore(self, previous: dict[str, Any]) -> None:
        d = self.d
        try:
            live = self.api.get(d.service_name, d.namespace)
            if live["spec"] != previous:
                self.api.apply_spec(live, previous)
            self.log("deploy: rolled back; the InferenceService spec is the previous one again")
        except Exception as exc:  # the original failure is what propagates; say what this left behind
            self.log(f"deploy: ROLLBACK FAILED ({exc}); the pipeline's finalize step removes the canary")


@contextmanager
def _undone_unless_finished(undo: Callable[[], None]) -> Iterator[None]:
    """Run `undo` in a `finally` unless the body finished: on any exception, SIGTERM (_Terminated) and
    SystemExit included. An unexpected exception surfaces as RolloutFailed naming it."""
    finished = False
    try:
        yield
        finished = True
    except RolloutFailed:
        raise
    except Exception as exc:
        raise RolloutFailed(str(exc) if isinstance(exc, DistilqaError) else f"{type(exc).__name__}: {exc}") from exc
    finally:
        if not finished:
            undo()


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(f"stopped by signal {signum} during the rollout")


def probe_answers(
    url: str, served_name: str, examples: list[Any], expected: dict[str, str], timeout: float
) -> ProbeResult:
    """Ask each example on its own at `url`; every answer must equal the evaluated prediction."""
    from distilqa.serving.client import ask

    latencies: list[float] = []
    wrong: list[str] = []
    for example in examples:
        start = time.perf_counter()
        (got,) = ask(url, [{"question": example.question, "context": example.context}], served_name, timeout=timeout)[
            "predictions"
        ]
        latencies.append((time.perf_counter() - start) * 1000)
        if got["answer"] != expected[example.id]:
            wrong.append(example.id)
    if wrong:
        raise RolloutFailed(
            f"{len(wrong)} of {len(examples)} probe answers at {url} differ from the evaluated ones (first: {wrong[0]})"
        )
    return ProbeResult(len(examples), tuple(latencies))
