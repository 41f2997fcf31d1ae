"""The pipeline against the MLflow the manifests deploy: the rendered Deployment's own command, args and
environment (tests/rendered.py), with a real PostgreSQL (initdb / pg_ctl in a temp dir) and a moto S3
server standing in for the cluster's database and object store, all on loopback.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import assert_clean_failure, free_port, run_cli, wait_for_port
from tests.rendered import Kubelet, find, render

pytestmark = pytest.mark.slow

ADMIN = ("admin", "distilqa-test-admin-pw")  # throwaway credentials of a loopback test server
DB = ("mlflow", "distilqa-test-db-pw")


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        pytest.fail(
            f"PostgreSQL's {name} not found: install the postgresql package (Debian: apt-get install postgresql)"
        )
    return found


def as_postgres_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root; CI runs as root, so drop to the postgres account."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    # not under pytest's tmp dir: that is private to root, and the server runs as postgres
    root = Path(tempfile.mkdtemp(prefix="distilqa-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    pwfile = root / "pw"
    pwfile.write_text("postgres-superuser-pw\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
    subprocess.run(
        as_postgres_user(
            [
                pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = root / "server.log"
    start = [
        pg_bin("pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(log),
        "-w",
        "-o",
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
        "start",
    ]
    subprocess.run(as_postgres_user(start), check=True, capture_output=True)
    try:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", password="postgres-superuser-pw", dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {DB[0]} LOGIN PASSWORD '{DB[1]}'")
            cur.execute(f"CREATE DATABASE mlflow OWNER {DB[0]}")
        conn.close()
        yield {"host": "127.0.0.1", "port": str(port)}
    finally:
        subprocess.run(
            as_postgres_user([pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, s3_server, tmp_path_factory) -> Iterator[dict[str, str]]:
    """The MLflow Deployment of the rendered onprem overlay, run as the kubelet would run it.

    Its init container writes the basic-auth config; then the server container starts with the
    manifest's own command, args and environment. The test supplies only what the runbook's step 5
    creates (Secret values) and what the cluster would (Service addresses, volumes), see tests/rendered.py.
    """
    import boto3

    objects = render("manifests/overlays/onprem")
    deployment = find(objects, "Deployment", "mlflow")["spec"]["template"]["spec"]
    config = find(objects, "ConfigMap", "mlflow-config")["data"]
    bucket = config["ARTIFACTS_DESTINATION"].removeprefix("s3://").split("/")[0]
    boto3.client(
        "s3",
        endpoint_url=s3_server["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("mlflow-server")
    (root / "auth").mkdir()
    kubelet = Kubelet(
        objects,
        secrets={  # the Secrets of docs/runbook.md step 5, with throwaway values
            "mlflow-db": {"username": DB[0], "password": DB[1]},
            "mlflow-admin": {"username": ADMIN[0], "password": ADMIN[1], "flask-secret-key": "test-only-flask-key"},
            "mlflow-s3": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
        },
        services={
            "postgres.mlflow.svc:5432": f"{postgres['host']}:{postgres['port']}",
            "http://seaweedfs.seaweedfs.svc:8333": s3_server["AWS_ENDPOINT_URL"],
        },
        mounts={"/auth": root / "auth"},
    )
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    # PATH: the image's mlflow and sh are this environment's
    base_env["PATH"] = f"{Path(sys.executable).parent}:{base_env.get('PATH', '')}"
    for init in deployment["initContainers"]:
        env = kubelet.env(init)
        done = subprocess.run(kubelet.argv(init, env), env={**base_env, **env}, capture_output=True, text=True)
        assert done.returncode == 0, f"init container {init['name']}: {done.stderr}"
    (server,) = deployment["containers"]
    env = kubelet.env(server)
    argv = kubelet.argv(server, env)
    port = server["ports"][0]["containerPort"]
    if not port_is_free(port):
        pytest.fail(f"port {port} (the manifest's containerPort) is in use on this machine: stop what holds it")
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(argv, cwd=root, env={**base_env, **env}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=120)
        url = f"http://localhost:{port}"  # a Host the manifest's --allowed-hosts lists
        probe = server["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the port opens before the app has migrated its tables
            try:
                urllib.request.urlopen(f"{url}{probe}", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        db = env["DB_USER"], env["DB_PASSWORD"]
        yield {
            "url": url,
            "log": str(root / "server.log"),
            "db": f"postgresql://{db[0]}:{db[1]}@{postgres['host']}:{postgres['port']}/mlflow",
            "bucket": bucket,
            "argv": argv,
            **s3_server,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code


def test_server_enforces_basic_auth_and_allowed_hosts(mlflow_server):
    api = f"{mlflow_server['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    import base64

    auth = {"Authorization": "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()}
    assert status_of(api) == 401
    assert status_of(api, {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}) == 401
    assert status_of(api, auth) == 200
    assert status_of(api, {**auth, "Host": "evil.example:80"}) == 403  # DNS rebinding guard


def test_the_rendered_server_serves_the_ui_and_accepts_an_authenticated_run(mlflow_server):
    import base64

    # the manifest's own args reached the process: PostgreSQL backend, proxied artifacts, basic auth
    argv = " ".join(mlflow_server["argv"])
    assert "--backend-store-uri=postgresql+psycopg2://" in argv and "--app-name=basic-auth" in argv
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()}
    page = urllib.request.urlopen(urllib.request.Request(f"{mlflow_server['url']}/", headers=auth), timeout=10)
    assert page.status == 200 and b"<html" in page.read().lower()

    def call(path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{mlflow_server['url']}/api/2.0/mlflow/{path}",
            data=json.dumps(body).encode(),
            headers={**auth, "Content-Type": "application/json"},
        )
        return json.loads(urllib.request.urlopen(request, timeout=10).read())

    experiment = call("experiments/create", {"name": "rendered-manifest-check"})["experiment_id"]
    run = call("runs/create", {"experiment_id": experiment, "run_name": "authenticated"})["run"]
    call("runs/log-metric", {"run_id": run["info"]["run_id"], "key": "f1", "value": 81.9, "timestamp": 0, "step": 0})
    import psycopg2

    with psycopg2.connect(mlflow_server["db"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT value FROM metrics WHERE run_uuid = %s AND key = 'f1'", (run["info"]["run_id"],))
        assert cur.fetchone()[0] == 81.9


def test_smoke_pipeline_tracks_and_registers_on_the_server(mlflow_server, tmp_path):
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server["url"],
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
    }
    out = tmp_path / "run"
    result = run_cli("run", "--profile", "smoke", "--output-dir", str(out), env=env, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracking_uri"] == mlflow_server["url"]
    assert summary["gate"]["passed"] is True and summary["version"] == "1"
    assert set(summary["aliases"]) == {"challenger", "champion"}

    # runs and the registry live in PostgreSQL ...
    import psycopg2

    with psycopg2.connect(mlflow_server["db"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs")
        assert cur.fetchone()[0] >= 6  # parent + nested stage runs
        cur.execute("SELECT name, version FROM model_versions")
        assert cur.fetchall() == [(summary["registered_model"], 1)]
        cur.execute("SELECT alias FROM registered_model_aliases ORDER BY alias")
        assert [r[0] for r in cur.fetchall()] == ["challenger", "champion"]
    # ... and every artifact (model files, eval JSON, model card) in the S3 bucket, through the server's proxy
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=mlflow_server["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=mlflow_server["bucket"])
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("model.safetensors") for k in keys), keys[:20]
    assert any(k.endswith("MLmodel") for k in keys)
    assert not list((out).rglob("mlflow.db"))  # no SQLite fallback

    # a user's client: the pyfunc from models:/name@champion, downloaded through the server
    client_env = {**os.environ, **env}
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        client_env.pop(key, None)  # clients need no bucket credentials: --serve-artifacts proxies them
    probe = (
        "import mlflow, pandas as pd, sys\n"
        f"m = mlflow.pyfunc.load_model('models:/{summary['registered_model']}@champion')\n"
        "out = m.predict(pd.DataFrame([{'question': 'Who?', 'context': 'Nobody knows.'}]))\n"
        "print(list(out.columns), len(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=client_env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "['answer', 'no_answer_probability'] 1" in done.stdout

    # promote / rollback against the server
    name = summary["registered_model"]
    assert run_cli("promote", "1", "--model-name", name, env=env).returncode == 0
    assert_clean_failure(run_cli("rollback", "--model-name", name, env=env), "no previous champion")
    # wrong credentials: a clear error, no traceback
    bad = run_cli("promote", "1", "--model-name", name, env={**env, "MLFLOW_TRACKING_PASSWORD": "wrong"})
    assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
