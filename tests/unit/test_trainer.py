"""The trainer: exact resume after SIGKILL, DDP = one process, accumulation, schedule, MLflow logging."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distilqa.distill.config import TrainConfig
from distilqa.distill.trainer import linear_schedule
from distilqa.errors import ConfigError
from tests.conftest import DISTILQA, assert_clean_failure, run_cli

# fp32 everywhere: `--amp auto` is bf16 on CPUs with native bf16, and these tests compare weights closely
WINDOW = ["--max-seq-len", "128", "--doc-stride", "64", "--amp", "fp32"]


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory, bpe_tokenizer_dir):
    """Dropout draws random masks per example, which no split of a batch can reproduce: off for equivalence tests."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    from distilqa.local_models import random_qa_model

    path = random_qa_model(bpe_tokenizer_dir, tmp_path_factory.mktemp("nodrop"), num_layers=2, hidden_size=64)
    config = AutoConfig.from_pretrained(path)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    model = AutoModelForQuestionAnswering.from_pretrained(path, config=config)
    model.save_pretrained(path)
    return path


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def signal_free(model_dir: Path, data_file: Path) -> set[str]:
    """Parameters whose true gradient is zero: a bias added to every position of a softmax (QA head
    bias, attention key biases, the last LayerNorm bias) cannot change the loss. Their computed
    gradients are float noise, which Adam turns into +-lr steps, so no two runs agree on them."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from distilqa.distill.finetune import qa_loss, qa_tensors
    from distilqa.squad import load_squad
    from distilqa.windows import WindowConfig

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    data = qa_tensors(load_squad(data_file), AutoTokenizer.from_pretrained(model_dir), WindowConfig(128, 64))
    qa_loss(model, {k: v[:32] for k, v in data.items()})["loss"].backward()
    return {name for name, p in model.named_parameters() if p.grad is None or float(p.grad.abs().max()) < 1e-6}


def assert_same_update(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: set[str]) -> None:
    assert "qa_outputs.bias" in skip and len(skip) < 10
    worst = max((float((a[k] - b[k]).abs().max()), k) for k in a if k not in skip)
    assert worst[0] < 2e-5, worst


def finetune(model, data, out, *extra, env=None):
    return run_cli("finetune", str(model), str(data), "-o", str(out), *WINDOW, "--lr", "1e-3", *extra, env=env)


def test_killed_and_resumed_run_ends_with_the_same_weights(tiny_roberta_dir, dev_slice_file, tmp_path):
    common = ["--epochs", "4", "--batch-size", "16", "--per-device-batch-size", "8", "--checkpoint-every", "10"]
    full = finetune(tiny_roberta_dir, dev_slice_file, tmp_path / "full", *common)
    assert full.returncode == 0, full.stderr
    total = json.loads((tmp_path / "full" / "training_record.json").read_text())["result"]["steps"]
    assert total > 40

    out = tmp_path / "killed"
    cmd = [
        DISTILQA,
        "finetune",
        str(tiny_roberta_dir),
        str(dev_slice_file),
        "-o",
        str(out),
        *WINDOW,
        "--lr",
        "1e-3",
        *common,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "checkpoint-10" / "meta.json").exists():  # committed
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: mid-epoch, mid-step
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists(), "the run finished before it could be killed"

    resumed = finetune(tiny_roberta_dir, dev_slice_file, out, *common)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads((out / "training_record.json").read_text())["result"]
    assert record["resumed_from_step"] >= 10 and record["steps_this_run"] == total - record["resumed_from_step"]
    # the record's total counts the checkpointed steps' seconds from the killed run as well as this run's
    assert record["wall_seconds_total"] > record["wall_seconds"] > 0
    assert f"{record['wall_seconds']}s this run, {record['wall_seconds_total']}s in all" in resumed.stderr
    full_result = json.loads((tmp_path / "full" / "training_record.json").read_text())["result"]
    assert full_result["wall_seconds_total"] == full_result["wall_seconds"]
    a, b = weights(tmp_path / "full"), weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_accumulation_does_not_change_the_update(no_dropout_model, dev_slice_file, tmp_path):
    one = finetune(
        no_dropout_model,
        dev_slice_file,
        tmp_path / "b16",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--per-device-batch-size",
        "16",
    )
    four = finetune(
        no_dropout_model,
        dev_slice_file,
        tmp_path / "b4x4",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--per-device-batch-size",
        "4",
    )
    assert one.returncode == 0 and four.returncode == 0, four.stderr
    assert_same_update(
        weights(tmp_path / "b16"), weights(tmp_path / "b4x4"), signal_free(no_dropout_model, dev_slice_file)
    )
    assert json.loads((tmp_path / "b4x4" / "training_record.json").read_text())["result"]["accumulation"] == 4


def test_two_process_ddp_equals_one_process(no_dropout_model, dev_slice_file, tmp_path):
    """The job a finished stage saves beside its model runs as it is under plain torchrun."""
    import yaml

    common = ["--epochs", "1", "--batch-size", "16"]
    single = finetune(no_dropout_model, dev_slice_file, tmp_path / "single", *common, "--per-device-batch-size", "8")
    assert single.returncode == 0, single.stderr
    job = yaml.safe_load((tmp_path / "single" / "job.yaml").read_text())
    assert job["stage"] == "finetune" and job["train"]["batch_size"] == 16 and job["train"]["amp"] == "fp32"
    job["output_dir"] = str(tmp_path / "ddp")
    job["train"]["per_device_batch_size"] = 4
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    ddp = subprocess.run(
        [*torchrun, "-m", "distilqa.train", str(tmp_path / "job.yaml")], capture_output=True, text=True
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "training_record.json").read_text())["result"]
    assert record["world_size"] == 2 and record["accumulation"] == 2
    a, b = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    assert_same_update(a, b, signal_free(no_dropout_model, dev_slice_file))
    untrained = load_file(str(no_dropout_model / "model.safetensors"))
    assert max(float((a[k] - untrained[k]).abs().max()) for k in a) > 1e-3  # training did move the weights


def test_linear_warmup_then_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup=2, total=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[3:] == pytest.approx([7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"lr": -1.0}, "lr"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"epochs": 0}, "epochs"),
        ({"amp": "fp8"}, "amp"),
    ],
)
def test_config_validation(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        TrainConfig(**kwargs)


def test_cli_rejects_a_batch_that_does_not_divide(tiny_roberta_dir, dev_slice_file, tmp_path):
    result = finetune(
        tiny_roberta_dir, dev_slice_file, tmp_path / "x", "--batch-size", "10", "--per-device-batch-size", "4"
    )
    assert_clean_failure(result, "global batch 10 is not a multiple")


def test_mlflow_logging_when_a_tracking_uri_is_set(tiny_roberta_dir, dev_slice_file, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = finetune(
        tiny_roberta_dir,
        dev_slice_file,
        tmp_path / "out",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--log-every",
        "5",
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["train.batch_size"] == "16" and run.data.params["stage"] == "finetune"
    for metric in ("loss", "lr", "samples_per_s"):
        history = client.get_metric_history(run.info.run_id, metric)
        assert len(history) >= 5, metric


def test_grouping_by_length_keeps_epochs_whole_and_cuts_padding(tmp_path):
    from distilqa.distill.trainer import Trainer

    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(4, 65, (400,), generator=g)
    mask = (torch.arange(64)[None, :] < lengths[:, None]).long()
    data = {"input_ids": torch.zeros(400, 64, dtype=torch.long), "attention_mask": mask}
    model = torch.nn.Linear(1, 1)

    def padded_tokens(grouped: bool) -> tuple[int, list[torch.Tensor]]:
        config = TrainConfig(epochs=2, batch_size=16, per_device_batch_size=8, group_by_length=grouped)
        trainer = Trainer(model, data, lambda m, b: {"loss": torch.zeros(())}, config, tmp_path / str(grouped))
        total, epochs = 0, []
        for epoch in range(2):
            seen = []
            for step in range(epoch * trainer.steps_per_epoch, (epoch + 1) * trainer.steps_per_epoch):
                for micro in trainer._micro_batches(step):
                    total += int(lengths[micro].max()) * len(micro)
                    seen.append(micro)
            epochs.append(torch.cat(seen))
        return total, epochs

    plain, plain_epochs = padded_tokens(False)
    grouped, grouped_epochs = padded_tokens(True)
    for order in grouped_epochs:  # every example exactly once per epoch
        assert sorted(order.tolist()) == list(range(400))
    assert not torch.equal(grouped_epochs[0], grouped_epochs[1])  # still shuffled per epoch
    assert grouped < 0.8 * plain, (grouped, plain)
