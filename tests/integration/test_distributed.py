"""The multi-process training path, rehearsed on CPUs: torchrun with 2 processes (gloo) is the DDP path
of a 4-GPU pod, `--nnodes 2` on loopback that of several nodes, SIGKILL of the whole process group a
reclaimed spot node, and a moto S3 server the checkpoint bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distilqa.distill.launch import kill_tree
from tests.conftest import DISTILQA, assert_clean_failure, free_port, run_cli, write_shard

pytestmark = pytest.mark.timeout(600)
# fp32 so that runs compare bit for bit whatever the CPU (auto is bf16 where the CPU has it natively)
WINDOW = ["--max-seq-len", "128", "--doc-stride", "64", "--amp", "fp32"]
TWO = ["--nproc-per-node", "2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, bpe_tokenizer_dir) -> dict[str, Path]:
    """A 4-layer QA teacher, its MLM twin (S1), and a 2-layer student made of its layers."""
    from distilqa.local_models import random_mlm_model, random_qa_model

    root = tmp_path_factory.mktemp("ddp-models")
    shape = {"num_layers": 4, "hidden_size": 64, "num_heads": 4}
    teacher = random_qa_model(bpe_tokenizer_dir, root / "teacher", **shape)
    mlm = random_mlm_model(bpe_tokenizer_dir, root / "mlm", **shape)
    result = run_cli("make-student", str(teacher), "-o", str(root / "student"), "--layers", "2")
    assert result.returncode == 0, result.stderr
    return {"teacher": teacher, "mlm": mlm, "student": root / "student"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, contexts) -> Path:
    path = tmp_path_factory.mktemp("ddp-corpus") / "corpus.txt"
    path.write_text("\n".join(c.replace("\n", " ") for c in contexts[:150]) + "\n")
    return path


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def result_of(directory: Path) -> dict:
    return json.loads((directory / "training_record.json").read_text())["result"]


def distill(stage: str, models, data, out: Path, *extra: str, env=None):
    args = ["distill", "--stage", stage, "--teacher", str(models["teacher"]), str(data), "-o", str(out), *WINDOW]
    if stage != "general":
        args += ["--student", str(models["student"])]
    return run_cli(*args, "--epochs", "1", "--batch-size", "16", "--per-device-batch-size", "4", *extra, env=env)


def test_s1_runs_under_ddp_without_the_pooler(models, corpus, tmp_path):
    """DDP used to wait forever for the pooler's gradients at the second step (the pooler is not in the loss)."""
    m = {**models, "teacher": models["mlm"]}
    result = distill("general", m, corpus, tmp_path / "s1", *TWO, "--student-layers", "2", "--max-sequences", "64")
    assert result.returncode == 0, result.stderr[-3000:]
    record = result_of(tmp_path / "s1")
    assert record["world_size"] == 2 and record["steps"] == 4
    assert not any(k.startswith("pooler") for k in weights(tmp_path / "s1"))


def test_s1_killed_under_ddp_resumes_at_the_same_corpus_position(models, contexts, tmp_path):
    """Four shards of four formats streamed over two ranks; SIGKILL after a checkpoint taken mid-document,
    then the same command: the weights equal those of the run that was never killed."""
    corpus = tmp_path / "corpus"
    documents = [c.replace("\n", " ") for c in contexts[:160]]
    for k, name in enumerate(("a.txt", "b.txt.gz", "c.jsonl", "d.jsonl.zst")):
        write_shard(corpus / name, documents[40 * k : 40 * (k + 1)])

    def command(out: Path) -> list[str]:
        args = ["distill", "--stage", "general", "--teacher", str(models["mlm"]), str(corpus), "-o", str(out)]
        options = ["--max-seq-len", "64", "--amp", "fp32", "--student-layers", "2", "--checkpoint-every", "7"]
        return [DISTILQA, *args, *TWO, *options, "--epochs", "2", "--batch-size", "8", "--per-device-batch-size", "4"]

    full = subprocess.run(command(tmp_path / "full"), capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-3000:]
    record = json.loads((tmp_path / "full" / "training_record.json").read_text())
    total = record["result"]["steps"]
    assert record["corpus_shards"] == 4 and total == 2 * record["sequences"] // 8 and total > 40

    out = tmp_path / "killed"
    proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (out / "checkpoint-14" / "meta.json").exists():
        assert proc.poll() is None, "the run ended before its checkpoint"
        time.sleep(0.005)
    kill_tree(proc.pid)
    proc.wait()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    step = max(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/meta.json"))
    positions = [torch.load(out / f"checkpoint-{step}" / f"rng-{r}.pt", weights_only=False)["data"] for r in (0, 1)]
    assert [p["consumed"] for p in positions] == [step % (total // 2) * 4] * 2
    assert positions[0]["carry"] != positions[1]["carry"]  # each rank its own shards, cut mid-document

    resumed = subprocess.run(command(out), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = result_of(out)
    assert result["resumed_from_step"] == step and result["steps_this_run"] == total - step
    a, b = weights(tmp_path / "full"), weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_s2a_trains_the_encoder_under_ddp_and_leaves_the_qa_head(models, dev_slice_file, tmp_path):
    result = distill("intermediate", models, dev_slice_file, tmp_path / "s2a", *TWO)
    assert result.returncode == 0, result.stderr[-3000:]
    record = result_of(tmp_path / "s2a")
    assert record["world_size"] == 2 and record["accumulation"] == 2
    before, after = weights(models["student"]), weights(tmp_path / "s2a")
    assert torch.equal(before["qa_outputs.weight"], after["qa_outputs.weight"])  # the head is not in S2a's loss
    moved = [k for k in before if k.startswith("roberta.encoder") and not torch.equal(before[k], after[k])]
    assert len(moved) > 10


def test_two_processes_fill_the_teacher_logit_cache_as_one_does(models, dev_slice_file, tmp_path):
    caches = {}
    for n in ("1", "2"):
        directory = tmp_path / f"cache-{n}"
        result = distill(
            "teacher_logits",
            models,
            dev_slice_file,
            tmp_path / "x",
            "--nproc-per-node",
            n,
            "--logits-cache",
            str(directory),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads((directory / "teacher_logits_record.json").read_text())["teacher_precision"] == "fp32"
        (npy,) = directory.glob("*.npy")
        caches[n] = np.load(npy)
    assert caches["1"].shape == caches["2"].shape and caches["1"].shape[0] > 500
    # each rank computed half of the features; assembled, they are the single process's logits
    assert np.abs(caches["1"] - caches["2"]).max() < 1e-5
    assert np.abs(caches["1"]).max() > 0.01


def _s3(s3_server):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _modified(client, bucket: str) -> dict[str, object]:
    return {o["Key"]: o["LastModified"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def _keys(client, bucket: str) -> dict[str, str]:
    return {o["Key"]: o["ETag"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_s2b_killed_under_ddp_resumes_from_s3_to_the_same_weights(models, dev_slice_file, tmp_path, s3_server):
    """A retried pod: SIGKILL to the whole torchrun process group after its first checkpoint, then the same command
    on another pod (an empty local cache), which downloads the features the first one published."""
    s3 = _s3(s3_server)
    s3.create_bucket(Bucket="ckpt")
    env = {**s3_server, "DISTILQA_CACHE": str(tmp_path / "cache")}
    cache = ["--logits-cache", str(tmp_path / "logits"), "--features-cache", "s3://ckpt/features"]
    common = [*TWO, *cache, "--epochs", "3", "--batch-size", "8", "--checkpoint-every", "10"]

    def command(out: Path, checkpoints: str) -> list[str]:
        return [
            DISTILQA,
            "distill",
            "--stage",
            "prediction",
            "--teacher",
            str(models["teacher"]),
            "--student",
            str(models["student"]),
            str(dev_slice_file),
            "-o",
            str(out),
            *WINDOW,
            "--per-device-batch-size",
            "4",
            *common,
            "--checkpoint-dir",
            checkpoints,
        ]

    full = subprocess.run(
        command(tmp_path / "full", "s3://ckpt/full"), capture_output=True, text=True, env={**os.environ, **env}
    )
    assert full.returncode == 0, full.stderr[-3000:]
    total = result_of(tmp_path / "full")["steps"]
    assert total > 100

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        command(out, "s3://ckpt/run"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and "run/checkpoint-10/meta.json" not in _keys(s3, "ckpt"):
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.05)
    kill_tree(proc.pid)  # launcher and both ranks at once, mid-step
    proc.wait()
    time.sleep(0.5)
    assert not (out / "model.safetensors").exists()
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"
    keys = _keys(s3, "ckpt")
    assert {"run/checkpoint-10/state.pt", "run/checkpoint-10/rng-0.pt", "run/checkpoint-10/rng-1.pt"} <= set(keys)

    published = {k: v for k, v in _modified(s3, "ckpt").items() if k.startswith("features/")}
    assert any(k.endswith("/index.json") for k in published)
    pod = {**os.environ, **env, "DISTILQA_CACHE": str(tmp_path / "pod-2")}
    resumed = subprocess.run(command(out, "s3://ckpt/run"), capture_output=True, text=True, env=pod)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # the new pod downloaded the features rather than tokenizing and publishing them again
    assert {k: v for k, v in _modified(s3, "ckpt").items() if k.startswith("features/")} == published
    assert [p.name for p in (tmp_path / "pod-2" / "features").iterdir()] == [published.popitem()[0].split("/")[1]]
    record = result_of(out)
    assert record["resumed_from_step"] >= 10 and record["steps_this_run"] == total - record["resumed_from_step"]
    a, b = weights(tmp_path / "full"), weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"

    # the same checkpoints with another learning rate, or on one process: refused, nothing written
    before = _keys(s3, "ckpt")
    changed = command(tmp_path / "other", "s3://ckpt/run")
    changed[changed.index("--checkpoint-every") :] = [
        "--checkpoint-every",
        "10",
        "--lr",
        "1e-4",
        "--checkpoint-dir",
        "s3://ckpt/run",
    ]
    refused = subprocess.run(changed, capture_output=True, text=True, env={**os.environ, **env})
    assert_clean_failure(refused, "belongs to another run", "train.lr: checkpoint 3e-05, this run 0.0001")
    one = command(tmp_path / "other", "s3://ckpt/run")
    one[one.index("--nproc-per-node") + 1] = "1"
    refused = subprocess.run(one, capture_output=True, text=True, env={**os.environ, **env})
    assert_clean_failure(refused, "written by 2 process(es), this run has 1")
    assert _keys(s3, "ckpt") == before
    assert not (tmp_path / "other" / "model.safetensors").exists()


def _node(rank: int, port: int, out: Path, models, data, *extra: str, cwd: Path | None = None) -> subprocess.Popen:
    """One "node" of a two-node job: its own launcher with one process, meeting node 0 on loopback."""
    train = ["--epochs", "1", "--batch-size", "16", "--per-device-batch-size", "8"]
    launch = ["--nproc-per-node", "1", "--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1"]
    cmd = [
        DISTILQA,
        "finetune",
        str(models["teacher"]),
        str(data),
        "-o",
        str(out),
        *WINDOW,
        *train,
        *launch,
        "--master-port",
        str(port),
        *extra,
    ]
    # both "nodes" share this machine's cores: one thread each, as torchrun gives each of 2 processes on one node,
    # so the two layouts also do the same floating-point work
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def test_two_nodes_of_one_process_train_as_one_node_of_two(models, dev_slice_file, tmp_path):
    """Global ranks (not local ones) decide the data shards: 2 nodes x 1 process == 1 node x 2, bit for bit."""
    one_node = run_cli(
        "finetune",
        str(models["teacher"]),
        str(dev_slice_file),
        "-o",
        str(tmp_path / "one"),
        *WINDOW,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--per-device-batch-size",
        "8",
        *TWO,
    )
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    port = free_port()
    nodes = [_node(rank, port, tmp_path / "two", models, dev_slice_file) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    record = result_of(tmp_path / "two")
    assert record["world_size"] == 2 and record["accumulation"] == 1
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ranks_that_see_different_jobs_stop_with_one_message(models, dev_slice_file, tmp_path):
    port = free_port()
    nodes = [
        _node(0, port, tmp_path / "out", models, dev_slice_file),
        _node(1, port, tmp_path / "out", models, dev_slice_file, "--lr", "1e-3"),
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 2, stderr[-2000:]
        assert "Traceback" not in stderr and "the ranks disagree on the job" in stderr, stderr[-2000:]
    assert "train.lr: rank 0 has 3e-05, rank 1 has 0.001" in outputs[0][1]
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_ranks_that_read_different_data_stop_with_one_message(models, dev_set, tmp_path):
    """The same job on two nodes whose train.json differ (a relative path, another working directory)."""
    from distilqa.squad import Article, SquadDataset, write_squad

    for rank, articles in ((0, dev_set.articles[:2]), (1, dev_set.articles[2:4])):
        (tmp_path / f"node{rank}").mkdir()
        write_squad(
            SquadDataset([Article(a.title, a.paragraphs[:3]) for a in articles]), tmp_path / f"node{rank}/t.json"
        )
    port = free_port()
    nodes = [_node(rank, port, tmp_path / "out", models, "t.json", cwd=tmp_path / f"node{rank}") for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 2, stderr[-2000:]
        assert "the ranks disagree on the job or data (data: rank 0 has" in stderr, stderr[-2000:]
    assert not (tmp_path / "out" / "model.safetensors").exists()
