"""SQuAD files and predictions over s3:// (a real moto S3 server on loopback) and https:// (a real TLS server)."""

from __future__ import annotations

import json
import shutil

import boto3
import pytest

from distilqa.errors import DataError
from distilqa.squad import DEFAULT_DEV_SET, load_squad
from tests.conftest import CONFORMANCE, assert_clean_failure, read_json, run_cli


@pytest.fixture()
def bucket(s3_env):
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    name = "squad-data"
    if name not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=name)
    client.upload_file(str(DEFAULT_DEV_SET), name, "squad2/dev-v2.0.json.gz")
    client.upload_file(str(CONFORMANCE / "bert-single.predictions.json"), name, "runs/bert/pred.json")
    return client, name


def test_load_squad_from_s3(bucket, dev_set):
    _, name = bucket
    remote = load_squad(f"s3://{name}/squad2/dev-v2.0.json.gz")
    assert remote.to_json() == dev_set.to_json()


def test_eval_cli_reads_and_writes_s3(bucket, s3_server):
    client, name = bucket
    result = run_cli(
        "eval",
        f"s3://{name}/squad2/dev-v2.0.json.gz",
        f"s3://{name}/runs/bert/pred.json",
        "--out-file",
        f"s3://{name}/runs/bert/eval.json",
        env=s3_server,
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(client.get_object(Bucket=name, Key="runs/bert/eval.json")["Body"].read())
    assert written == read_json(CONFORMANCE / "bert-single.expected.json")


def test_missing_s3_object_and_bucket(bucket, s3_server):
    _, name = bucket
    with pytest.raises(DataError, match="no such object"):
        load_squad(f"s3://{name}/squad2/missing.json")
    result = run_cli("eval", "s3://no-such-bucket/dev.json", f"s3://{name}/runs/bert/pred.json", env=s3_server)
    assert_clean_failure(result, "s3://no-such-bucket/dev.json", "no such bucket")


def test_s3_endpoint_down_is_a_clear_error(tmp_path):
    env = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    result = run_cli("eval", "s3://bucket/dev.json", str(CONFORMANCE / "bert-single.predictions.json"), env=env)
    assert_clean_failure(result, "s3://bucket/dev.json", "cannot read")


def test_load_and_eval_over_https(https_server, dev_set, monkeypatch):
    base, root, ca_bundle = https_server
    shutil.copy(DEFAULT_DEV_SET, root / "dev-v2.0.json.gz")
    shutil.copy(CONFORMANCE / "nlnet-single.predictions.json", root / "pred.json")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_bundle))
    assert load_squad(f"{base}/dev-v2.0.json.gz").to_json() == dev_set.to_json()
    result = run_cli("eval", f"{base}/dev-v2.0.json.gz", f"{base}/pred.json", env={"SSL_CERT_FILE": str(ca_bundle)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == read_json(CONFORMANCE / "nlnet-single.expected.json")


def test_https_errors_are_clear(https_server):
    base, _, ca_bundle = https_server
    env = {"SSL_CERT_FILE": str(ca_bundle)}
    pred = str(CONFORMANCE / "bert-single.predictions.json")
    assert_clean_failure(run_cli("eval", f"{base}/absent.json", pred, env=env), "absent.json", "HTTP 404")
    # an untrusted certificate is refused, not silently accepted
    result = run_cli("eval", f"{base}/absent.json", pred, env={"SSL_CERT_FILE": "/dev/null"})
    assert_clean_failure(result, "absent.json", "cannot fetch", "CERTIFICATE")


def test_model_from_s3_prefix(s3_server, tiny_roberta_dir, dev_slice_file, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="models")
    for path in tiny_roberta_dir.iterdir():
        client.upload_file(str(path), "models", f"tiny/v1/{path.name}")
    env = {**s3_server, "DISTILQA_CACHE": str(tmp_path / "cache")}
    local = run_cli(
        "predict", str(tiny_roberta_dir), str(dev_slice_file), "-o", str(tmp_path / "a.json"), "--limit", "20"
    )
    remote = run_cli(
        "predict", "s3://models/tiny/v1", str(dev_slice_file), "-o", str(tmp_path / "b.json"), "--limit", "20", env=env
    )
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    cached = list((tmp_path / "cache" / "s3").iterdir())
    assert len(cached) == 1 and (cached[0] / "config.json").exists()
    missing = run_cli(
        "predict", "s3://models/nothing-here", str(dev_slice_file), "-o", str(tmp_path / "c.json"), env=env
    )
    assert_clean_failure(missing, "s3://models/nothing-here", "no objects")
