"""A real `distilqa serve` process (kserve ModelServer) on loopback: answers equal `distilqa predict`'s."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from distilqa.serving.process import ServerProcess

from distilqa.squad import load_squad
from tests.conftest import DISTILQA, run_cli

WINDOW = ["--max-seq-len", "256", "--doc-stride", "64"]
PRICE = 2.0


def http(method: str, url: str, body: bytes | dict | list | None = None, timeout: float = 60) -> tuple[int, dict | str]:
    data = json.dumps(body).encode() if isinstance(body, dict | list) else body
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def start_server(model_dir, log: Path, *extra: str) -> tuple[str, int, subprocess.Popen]:
    server = ServerProcess(model_dir, *extra, log=log)
    return server.url, server.port, server.proc


@pytest.fixture(scope="module")
def server(tiny_roberta_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    base, port, proc = start_server(
        tiny_roberta_dir,
        log,
        "--name",
        "tiny",
        *WINDOW,
        "--max-wait-ms",
        "50",
        "--max-instances",
        "30",
        "--max-context-chars",
        "5000",
        "--price-per-second",
        str(PRICE),
    )
    yield base, port, proc
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def predicted(tiny_roberta_dir, dev_slice_file, tmp_path_factory):
    """What `distilqa predict` answers on the slice, with the server's window settings."""
    out = tmp_path_factory.mktemp("pred") / "pred.json"
    result = run_cli("predict", str(tiny_roberta_dir), str(dev_slice_file), "-o", str(out), *WINDOW)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


def test_health_and_metadata(server):
    base, _, _ = server
    assert http("GET", f"{base}/v2/health/live")[0] == 200
    assert http("GET", f"{base}/v2/health/ready")[0] == 200
    assert http("GET", f"{base}/v2/models/tiny/ready")[0] == 200
    status, meta = http("GET", f"{base}/v2/models/tiny")
    assert status == 200 and meta["name"] == "tiny"


def test_binds_loopback_only(server):
    _, port, _ = server
    listening = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            listening.append(local.split(":")[0])
    assert listening == ["0100007F"]  # 127.0.0.1, not 0.0.0.0


def test_v1_answers_equal_distilqa_predict(server, dev_slice_file, predicted):
    base, _, _ = server
    examples = load_squad(dev_slice_file).examples()
    got = {}
    for begin in range(0, len(examples), 25):
        chunk = examples[begin : begin + 25]
        body = {"instances": [{"question": e.question, "context": e.context} for e in chunk]}
        status, response = http("POST", f"{base}/v1/models/tiny:predict", body)
        assert status == 200, response
        for e, p in zip(chunk, response["predictions"], strict=True):
            got[e.id] = p["answer"]
            assert p["is_impossible"] == (p["answer"] == "")
            if p["answer"]:
                assert e.context[p["start"] : p["end"]] == p["answer"]
            assert 0.0 <= p["score"] <= 1.0
        assert response["compute_seconds"] > 0
        assert response["cost"] == pytest.approx(response["compute_seconds"] * PRICE, abs=1e-6)
    assert got == predicted


def test_v2_answers_equal_distilqa_predict(server, dev_slice_file, predicted):
    base, _, _ = server
    examples = load_squad(dev_slice_file).examples()[:20]
    body = {
        "id": "request-42",
        "inputs": [
            {"name": "question", "shape": [20], "datatype": "BYTES", "data": [e.question for e in examples]},
            {"name": "context", "shape": [20], "datatype": "BYTES", "data": [e.context for e in examples]},
        ],
    }
    status, response = http("POST", f"{base}/v2/models/tiny/infer", body)
    assert status == 200, response
    assert response["id"] == "request-42"
    outputs = {o["name"]: o for o in response["outputs"]}
    assert outputs["answer"]["datatype"] == "BYTES" and outputs["score"]["datatype"] == "FP32"
    assert outputs["start"]["datatype"] == outputs["end"]["datatype"] == "INT64"
    assert outputs["answer"]["data"] == [predicted[e.id] for e in examples]
    assert response["parameters"]["compute_seconds"] > 0


def test_per_request_parameters(server, dev_slice_file):
    base, _, _ = server
    e = load_squad(dev_slice_file).examples()[0]
    url = f"{base}/v1/models/tiny:predict"
    instance = {"question": e.question, "context": e.context}
    never = http("POST", url, {"instances": [instance], "parameters": {"null_score_diff_threshold": 1e9, "top_k": 3}})[
        1
    ]
    always = http("POST", url, {"instances": [instance], "parameters": {"null_score_diff_threshold": -1e9}})[1]
    assert never["predictions"][0]["answer"] != "" and always["predictions"][0]["answer"] == ""
    candidates = never["predictions"][0]["candidates"]
    assert len(candidates) == 3 and candidates[0]["answer"] == never["predictions"][0]["answer"]
    short = http(
        "POST", url, {"instances": [instance], "parameters": {"max_answer_length": 1, "null_score_diff_threshold": 1e9}}
    )[1]
    assert len(short["predictions"][0]["answer"].split()) <= 1


GOOD = {"question": "Who?", "context": "Somebody did it."}
BAD_V1 = [
    (b"{not json", "Unrecognized request format"),
    ([1, 2], "must be a JSON object"),
    ({"inputs": []}, "instances"),
    ({"instances": "Who?"}, "instances"),
    ({"instances": []}, "no question"),
    ({"instances": [{"question": "Who?"}]}, "instances[0].context"),
    ({"instances": [{"question": 42, "context": "x y"}]}, "instances[0].question must be a string"),
    ({"instances": [{"question": "   ", "context": "x y"}]}, "instances[0].question is empty"),
    ({"instances": [{"question": "Who?", "context": "x" * 5001}]}, "too long"),
    ({"instances": [GOOD] * 31}, "too many questions"),
    ({"instances": [GOOD], "parameters": {"temperature": 1}}, "unknown parameters"),
    ({"instances": [GOOD], "parameters": {"top_k": 0}}, "top_k"),
    ({"instances": [GOOD], "parameters": {"null_score_diff_threshold": "high"}}, "finite number"),
    ({"instances": [GOOD], "parameters": []}, "'parameters' must be an object"),
    (b'{"instances": [{"question": "\xff\xfe", "context": "abc"}]}', ""),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_V1)
def test_bad_v1_requests_get_4xx_and_the_server_stays_up(server, body, fragment):
    base, _, proc = server
    status, response = http("POST", f"{base}/v1/models/tiny:predict", body)
    assert 400 <= status < 500, (status, response)
    assert fragment in json.dumps(response), response
    assert proc.poll() is None
    assert http("POST", f"{base}/v1/models/tiny:predict", {"instances": [GOOD]})[0] == 200


def _v2(question, context, q_type="BYTES", q_shape=None, c_shape=None):
    return {
        "inputs": [
            {"name": "question", "shape": q_shape or [len(question)], "datatype": q_type, "data": question},
            {"name": "context", "shape": c_shape or [len(context)], "datatype": "BYTES", "data": context},
        ]
    }


BAD_V2 = [
    ({"inputs": [{"name": "question", "shape": [1], "datatype": "BYTES", "data": ["Who?"]}]}, "missing"),
    (_v2(["Who?"], ["A b."], q_type="FP32"), "datatype BYTES"),
    (_v2(["Who?"], ["A b."], q_shape=[2]), "shape"),
    (_v2(["Who?", "What?"], ["A b."]), "same length"),
    (_v2([""], ["A b."]), "question[0] is empty"),
    (_v2(["Who?"], ["A b."]) | {"parameters": {"top_k": 99}}, "top_k"),
    ({"inputs": "nope"}, ""),
]


@pytest.mark.parametrize(("body", "fragment"), BAD_V2)
def test_bad_v2_requests_get_4xx_and_the_server_stays_up(server, body, fragment):
    base, _, proc = server
    status, response = http("POST", f"{base}/v2/models/tiny/infer", body)
    assert 400 <= status < 500, (status, response)
    assert fragment in json.dumps(response), response
    assert proc.poll() is None


def test_unknown_model_is_404(server):
    base, _, _ = server
    assert http("POST", f"{base}/v1/models/nope:predict", {"instances": [GOOD]})[0] == 404


def test_concurrent_requests_are_micro_batched(server, dev_slice_file, predicted):
    base, _, _ = server
    examples = load_squad(dev_slice_file).examples()[:32]
    results: dict[str, str] = {}
    errors: list[object] = []

    def one(e):
        status, response = http(
            "POST", f"{base}/v1/models/tiny:predict", {"instances": [{"question": e.question, "context": e.context}]}
        )
        if status != 200:
            errors.append(response)
        else:
            results[e.id] = response["predictions"][0]["answer"]

    before = _batches(base)
    threads = [threading.Thread(target=one, args=(e,)) for e in examples]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {e.id: predicted[e.id] for e in examples}
    batches = _batches(base) - before
    assert 1 <= batches < len(examples)  # several requests shared a forward pass


def _batches(base: str) -> float:
    status, text = http("GET", f"{base}/metrics")
    assert status == 200
    for line in str(text).splitlines():
        if line.startswith("distilqa_batch_questions_count"):
            return float(line.split()[-1])
    raise AssertionError("no distilqa_batch_questions metric")


def test_client_command(server):
    base, _, _ = server
    result = run_cli(
        "predict", "--url", base, "--model-name", "tiny", "--question", "Who did it?", "--context", "Somebody did it."
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)["predictions"][0]
    assert answer["answer"] == "" or answer["answer"] in "Somebody did it."
    failed = run_cli("predict", "--url", base, "--model-name", "tiny", "--question", " ", "--context", "x")
    assert failed.returncode == 2 and "HTTP 400" in failed.stderr and "Traceback" not in failed.stderr


def test_serve_rejects_bad_arguments(tmp_path):
    for args, fragment in ([str(tmp_path), "--port", "70000"], "--port"), ([str(tmp_path)], "config.json"):
        proc = subprocess.run([DISTILQA, "serve", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_stops_cleanly(tiny_roberta_dir, tmp_path):
    """SIGTERM ends the server (kserve's signal handler), so pods and tests do not hang."""
    _, _, proc = start_server(tiny_roberta_dir, tmp_path / "log")
    try:
        proc.terminate()
        assert proc.wait(timeout=60) is not None
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_same_precision_same_answers_as_predict(tiny_roberta_dir, dev_slice_file, tmp_path, precision):
    pred_file = tmp_path / "pred.json"
    result = run_cli(
        "predict",
        str(tiny_roberta_dir),
        str(dev_slice_file),
        "-o",
        str(pred_file),
        *WINDOW,
        "--precision",
        precision,
        "--limit",
        "24",
    )
    assert result.returncode == 0, result.stderr
    assert f"{precision};" in result.stderr
    predicted = json.loads(pred_file.read_text())
    base, _, proc = start_server(tiny_roberta_dir, tmp_path / "log", *WINDOW, "--precision", precision)
    try:
        examples = load_squad(dev_slice_file).examples()[:24]
        got: dict[str, str] = {}

        def send(group):  # uneven requests at once: they share batches unlike predict's
            body = {"instances": [{"question": e.question, "context": e.context} for e in group]}
            status, response = http("POST", f"{base}/v1/models/distilqa:predict", body)
            assert status == 200, response
            got.update({e.id: p["answer"] for e, p in zip(group, response["predictions"], strict=True)})

        groups = [examples[0:1], examples[1:4], examples[4:12], examples[12:24]]
        threads = [threading.Thread(target=send, args=(g,)) for g in groups]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert got == predicted
    finally:
        proc.terminate()
        proc.wait(timeout=60)
