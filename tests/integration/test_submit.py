"""`distilqa submit` through the real kfp.Client against a local stand-in of the KFP v2beta1 API
(tests/kfp_standin.py): no Kubeflow Pipelines backend can run here."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import assert_clean_failure, run_cli
from tests.kfp_standin import KfpStandin

TOKEN = "standin-bearer-token"
COOKIE = "standin-session-cookie"


def submit(host: str, *args: str, env: dict[str, str] | None = None):
    return run_cli("submit", "--profile", "smoke", "--host", host, *args, env=env, timeout=300)


def test_submit_uploads_a_named_version_and_runs_it_in_the_users_namespace(tmp_path):
    with KfpStandin(token=TOKEN) as kfp:
        env = {"KF_PIPELINES_TOKEN": TOKEN}
        first = submit(kfp.url, "--namespace", "team-qa", "--experiment", "nightly", "--version-name", "v1", env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        created = json.loads(first.stdout)
        assert created["pipeline_created"] is True and created["version"] == "v1" and created["run_id"]
        second = submit(
            kfp.url,
            "--namespace",
            "team-qa",
            "--experiment",
            "nightly",
            "--pipeline-root",
            "s3://bucket/root",
            env=env,
        )
        assert second.returncode == 0, second.stderr[-3000:]
        again = json.loads(second.stdout)
        state = kfp.state
    # one pipeline, a new version per submit, both runs in the same experiment of the namespace
    assert again["pipeline_created"] is False and again["pipeline_id"] == created["pipeline_id"]
    assert again["experiment_id"] == created["experiment_id"]
    (pipeline,) = state.pipelines.values()
    assert pipeline == {"pipeline_id": created["pipeline_id"], "display_name": "distilqa-smoke", "namespace": "team-qa"}
    names = [v["display_name"] for v in state.versions.values()]
    assert "v1" in names and again["version"].startswith("smoke-") and again["version"] in names
    uploaded = state.versions[again["version_id"]]["pipeline_spec"]
    assert uploaded["pipelineInfo"]["name"] == "distilqa-smoke"
    (experiment,) = state.experiments.values()
    assert experiment["namespace"] == "team-qa" and experiment["display_name"] == "nightly"
    runs = list(state.runs.values())
    assert [r["pipeline_version_reference"]["pipeline_version_id"] for r in runs] == [
        created["version_id"],
        again["version_id"],
    ]
    assert runs[1]["runtime_config"]["pipeline_root"] == "s3://bucket/root"
    authed = [r for r in state.requests if not r["path"].endswith("/healthz")]
    assert authed and all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in authed)


def test_submit_schedules_a_recurring_run_with_a_session_cookie(tmp_path):
    cookie = tmp_path / "cookie"
    cookie.write_text(f"authservice_session={COOKIE}\n")
    with KfpStandin(cookie=COOKIE) as kfp:
        result = submit(
            kfp.url, "--namespace", "team-qa", "--session-cookie-file", str(cookie), "--cron", "30 2 * * 1-5"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        state = kfp.state
    out = json.loads(result.stdout)
    (recurring,) = state.recurring.values()
    assert out["recurring_run_id"] == recurring["recurring_run_id"] and not state.runs
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * 1-5"  # KFP's 6 fields
    assert recurring["max_concurrency"] in (1, "1") and recurring["no_catchup"] is True
    assert recurring["pipeline_version_reference"]["pipeline_version_id"] == out["version_id"]


def test_wrong_credentials_and_a_missing_namespace_fail_cleanly(tmp_path):
    with KfpStandin(token=TOKEN) as kfp:
        bad = submit(kfp.url, "--namespace", "team-qa", env={"KF_PIPELINES_TOKEN": "wrong"})
        assert_clean_failure(bad, "HTTP 401")
        no_ns = submit(kfp.url, env={"KF_PIPELINES_TOKEN": TOKEN})
        assert_clean_failure(no_ns, "namespace is required")
        assert not kfp.state.pipelines and not kfp.state.runs


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cron", "every day"], "--cron must be a cron expression"),
        (["--token-file", "/nonexistent/token"], "--token-file /nonexistent/token"),
        (["--pipeline-root", "http://x/y"], "--pipeline-root must start with"),
        (["--cron", "0 1 * * *", "--wait"], "--wait waits for one run"),
    ],
)
def test_bad_submit_options_exit_2_before_anything_is_sent(args, message):
    with KfpStandin(token=TOKEN) as kfp:
        result = submit(kfp.url, "--namespace", "team-qa", *args, env={"KF_PIPELINES_TOKEN": TOKEN})
        assert_clean_failure(result, message)
        assert not kfp.state.requests


def test_the_standin_rejects_what_the_backend_rejects():
    """The stand-in is strict: an upload that is not a compiled pipeline, a bad cron, no auth."""
    import urllib.error
    import urllib.request

    with KfpStandin(token=TOKEN) as kfp:

        def call(path: str, data: bytes, headers: dict) -> int:
            request = urllib.request.Request(f"{kfp.url}/apis/v2beta1{path}", data=data, headers=headers)
            try:
                return urllib.request.urlopen(request).status
            except urllib.error.HTTPError as e:
                return e.code

        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert call("/experiments", b'{"display_name": "x", "namespace": "n"}', {}) == 401
        boundary = "b0undary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="uploadfile"; filename="p.yaml"\r\n\r\n'
            f"{yaml.safe_dump({'not': 'a pipeline'})}\r\n--{boundary}--\r\n"
        ).encode()
        multipart = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        assert call("/pipelines/upload?name=x&namespace=n", body, multipart) == 400
        assert call("/recurringruns", b'{"experiment_id": "nope"}', auth) == 404
