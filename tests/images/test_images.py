"""The images, built and run for real with podman (`make test-images` builds them, then runs this).

- The CPU step image runs a pipeline step exactly as KFP runs it: the compiled pipeline's own command
  and args for the ingest step, its `{{$}}` placeholder filled with an executor input whose artifact
  URIs are s3:// (the launcher stages them under /s3, mounted here from a directory).
- The serving image runs with the args of the InferenceService the deploy step creates and a model at
  /mnt/models (what KServe's storage initializer provides), and answers through V1 and V2 exactly as
  `distilqa predict`.
- Both say what they are: the git SHA they were built from, as a label and in distilqa's code version,
  and they run as the non-root user the manifests expect.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from distilqa.squad import load_squad
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("TAG", "dev")
CPU, SERVE = f"localhost/distilqa-cpu:{TAG}", f"localhost/distilqa-serve:{TAG}"
CONF = ROOT / ".images" / "containers.conf"

pytestmark = pytest.mark.slow


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert done.returncode == 0, f"podman {' '.join(args[:3])}: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module", autouse=True)
def images_built():
    for image in (CPU, SERVE):
        if podman("image", "exists", image, check=False).returncode != 0:
            pytest.fail(f"{image} is not built: run `make test-images` (scripts/images.sh builds it)")


def sha() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()


@pytest.mark.parametrize("image, uid", [(CPU, "10001"), (SERVE, "1000")])
def test_images_say_what_they_are_and_run_as_non_root(image, uid):
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    assert inspected["Config"]["Labels"]["org.opencontainers.image.revision"] == sha()
    assert inspected["Config"]["User"] == uid
    code = "from distilqa.distill.provenance import code_version; print(code_version())"
    out = podman("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", code).stdout
    assert out.strip().endswith(f"({sha()})"), out
    assert podman("run", "--rm", "--network", "none", "--entrypoint", "id", image, "-u").stdout.strip() == uid


def test_a_pipeline_step_runs_in_the_cpu_image_as_kfp_runs_it(tmp_path):
    package = tmp_path / "smoke.yaml"
    assert run_cli("compile", "--profile", "smoke", "-o", str(package)).returncode == 0
    spec = next(yaml.safe_load_all(package.read_text()))
    container = spec["deploymentSpec"]["executors"]["exec-ingest-op"]["container"]
    stage = tmp_path / "s3"  # what the KFP launcher mounts: s3://b/k is /s3/b/k in the step
    (stage / "root" / "ingest").mkdir(parents=True)
    os.chmod(stage / "root" / "ingest", 0o777)
    executor_input = {
        "inputs": {"parameterValues": {"data": {"train": "builtin:dev", "dev": "builtin:dev", "dev_articles": "0:2"}}},
        "outputs": {
            "artifacts": {
                split: {
                    "artifacts": [
                        {"name": split, "type": {"schemaTitle": "system.Dataset"}, "uri": f"s3://root/ingest/{split}"}
                    ]
                }
                for split in ("train", "dev")
            },
            "parameters": {
                name: {"outputFile": f"/s3/root/ingest/{name}"}
                for name in ("train_questions", "dev_questions", "train_checksum", "dev_checksum")
            },
            "outputFile": "/s3/root/ingest/executor_output.json",
        },
    }
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    run = podman(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{stage}:/s3",
        "--entrypoint",
        container["command"][0],
        CPU,
        *container["command"][1:],
        *args,
    )
    assert "Wrote executor output file" in run.stderr + run.stdout
    output = json.loads((stage / "root" / "ingest" / "executor_output.json").read_text())
    dev = load_squad(stage / "root" / "ingest" / "dev")
    assert dev.num_questions == output["parameterValues"]["dev_questions"] > 0
    assert output["parameterValues"]["train_checksum"].startswith("sha256:")
    assert len(dev.articles) == 2  # the dev_articles slice was applied inside the container


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_the_serving_image_answers_v1_and_v2_as_distilqa_predict(tiny_roberta_dir, dev_slice_file, tmp_path):
    from distilqa.serving.rollout import Release, first_state

    release = Release(SERVE, "s3://b/1", "tinyroberta-squad2", "1", "fp32")
    isvc = first_state(release, "distilqa", "tinyroberta-squad2", "distilqa-serving")
    (container,) = isvc["spec"]["predictor"]["containers"]
    args = container["args"]
    name, port = args[args.index("--name") + 1], int(args[args.index("--port") + 1])
    models = tmp_path / "models"
    subprocess.run(["cp", "-r", str(tiny_roberta_dir), str(models)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(models)], check=True)  # the image's user reads it
    env = [f"--env={e['name']}={e['value']}" for e in container.get("env", []) if "value" in e]
    cid = podman(
        "run", "-d", "-p", f"127.0.0.1::{port}", "-v", f"{models}:/mnt/models:ro", *env, SERVE, *args
    ).stdout.strip()
    try:
        mapped = podman("port", cid, f"{port}/tcp").stdout.strip().split(":")[-1]
        base = f"http://127.0.0.1:{mapped}"
        ready = container["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if http("GET", f"{base}{ready}")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(1)
        else:
            logs = podman("logs", cid, check=False)
            pytest.fail(f"the serving container never became ready:\n{(logs.stdout + logs.stderr)[-3000:]}")
        examples = load_squad(dev_slice_file).examples()[:12]
        precision = args[args.index("--precision") + 1]
        out = tmp_path / "predicted.json"
        predicted = run_cli(
            "predict", str(tiny_roberta_dir), str(dev_slice_file), "-o", str(out), "--precision", precision
        )
        assert predicted.returncode == 0, predicted.stderr
        expected = json.loads(out.read_text())
        status, v1 = http(
            "POST",
            f"{base}/v1/models/{name}:predict",
            {"instances": [{"question": e.question, "context": e.context} for e in examples]},
        )
        assert status == 200, v1
        assert [p["answer"] for p in v1["predictions"]] == [expected[e.id] for e in examples]
        v2_body = {
            "inputs": [
                {
                    "name": "question",
                    "shape": [len(examples)],
                    "datatype": "BYTES",
                    "data": [e.question for e in examples],
                },
                {
                    "name": "context",
                    "shape": [len(examples)],
                    "datatype": "BYTES",
                    "data": [e.context for e in examples],
                },
            ]
        }
        status, v2 = http("POST", f"{base}/v2/models/{name}/infer", v2_body)
        assert status == 200, v2
        answers = next(o for o in v2["outputs"] if o["name"] == "answer")["data"]
        assert answers == [expected[e.id] for e in examples]
        assert 400 <= http("POST", f"{base}/v2/models/{name}/infer", {"inputs": "junk"})[0] < 500
    finally:
        podman("rm", "-f", "-t", "5", cid, check=False)
