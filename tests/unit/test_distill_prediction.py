"""Stage S2b: the student moves toward the teacher; teacher logits are cached and re-keyed; bad setups fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import assert_clean_failure, run_cli

WINDOW = ["--max-seq-len", "128", "--doc-stride", "64"]
TRAIN = ["--epochs", "2", "--batch-size", "16", "--per-device-batch-size", "16", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, bpe_tokenizer_dir):
    from distilqa.local_models import random_qa_model

    return random_qa_model(
        bpe_tokenizer_dir, tmp_path_factory.mktemp("teacher"), num_layers=2, hidden_size=96, num_heads=4, seed=7
    )


def mean_kl_to_teacher(student_dir, teacher_dir, data_file) -> float:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from distilqa.distill.finetune import qa_tensors
    from distilqa.squad import load_squad
    from distilqa.windows import WindowConfig

    data = qa_tensors(load_squad(data_file), AutoTokenizer.from_pretrained(student_dir), WindowConfig(128, 64))
    inputs = {k: data[k][:64] for k in ("input_ids", "attention_mask")}
    pad = inputs["attention_mask"] == 0
    total = 0.0
    with torch.inference_mode():
        s = AutoModelForQuestionAnswering.from_pretrained(student_dir).eval()(**inputs)
        t = AutoModelForQuestionAnswering.from_pretrained(teacher_dir).eval()(**inputs)
        for a, b in ((s.start_logits, t.start_logits), (s.end_logits, t.end_logits)):
            log_s = F.log_softmax(a.masked_fill(pad, -1e4), -1)
            p_t = F.softmax(b.masked_fill(pad, -1e4), -1)
            total += float((p_t * (torch.log(p_t.clamp_min(1e-30)) - log_s)).sum(-1).mean())
    return total


def test_student_moves_toward_the_teacher_and_logits_are_cached(
    tiny_roberta_dir, teacher_dir, dev_slice_file, tmp_path
):
    cache = tmp_path / "cache"
    common = [
        "distill",
        "--stage",
        "prediction",
        "--teacher",
        str(teacher_dir),
        "--student",
        str(tiny_roberta_dir),
        str(dev_slice_file),
        *WINDOW,
        *TRAIN,
        "--distillation-weight",
        "1.0",
        "--logits-cache",
        str(cache),
    ]
    first = run_cli(*common, "-o", str(tmp_path / "s1"))
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((tmp_path / "s1" / "training_record.json").read_text())
    assert record["teacher_logits"] == "computed" and record["teacher_checksum"]
    before = mean_kl_to_teacher(tiny_roberta_dir, teacher_dir, dev_slice_file)
    after = mean_kl_to_teacher(tmp_path / "s1", teacher_dir, dev_slice_file)
    assert after < 0.8 * before, (before, after)

    again = run_cli(*common, "-o", str(tmp_path / "s2"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "s2" / "training_record.json").read_text())["teacher_logits"] == "cached"
    assert len(list(cache.glob("*.npy"))) == 1

    other_window = [a if a != "64" else "48" for a in common]  # another doc stride: other features, other key
    third = run_cli(*other_window, "-o", str(tmp_path / "s3"))
    assert third.returncode == 0, third.stderr[-2000:]
    assert json.loads((tmp_path / "s3" / "training_record.json").read_text())["teacher_logits"] == "computed"
    assert len(list(cache.glob("*.npy"))) == 2


def test_different_tokenizers_are_refused(tiny_roberta_dir, tiny_bert_dir, dev_slice_file, tmp_path):
    result = run_cli(
        "distill",
        "--stage",
        "prediction",
        "--teacher",
        str(tiny_bert_dir),
        "--student",
        str(tiny_roberta_dir),
        str(dev_slice_file),
        "-o",
        str(tmp_path / "x"),
        *WINDOW,
    )
    assert_clean_failure(result, "tokenizers differ")


def test_bad_distillation_parameters(tiny_roberta_dir, teacher_dir, dev_slice_file, tmp_path):
    base = [
        "distill",
        "--stage",
        "prediction",
        "--teacher",
        str(teacher_dir),
        "--student",
        str(tiny_roberta_dir),
        str(dev_slice_file),
        "-o",
        str(tmp_path / "x"),
        *WINDOW,
    ]
    assert_clean_failure(run_cli(*base, "--temperature", "0"), "temperature")
    assert_clean_failure(run_cli(*base, "--distillation-weight", "1.5"), "weight")
    unknown = run_cli(*base[:2], "pretrain", *base[3:])
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_length_sorted_cache_matches_one_feature_at_a_time(teacher_dir, dev_slice_file, tmp_path):
    """Batches of sorted lengths, written back by index, must give each feature its own logits."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from distilqa.distill.finetune import qa_tensors
    from distilqa.distill.teacher_logits import cached_teacher_logits
    from distilqa.squad import load_squad
    from distilqa.windows import WindowConfig

    data = qa_tensors(load_squad(dev_slice_file), AutoTokenizer.from_pretrained(teacher_dir), WindowConfig(128, 64))
    data = {k: v[:40] for k, v in data.items()}
    lengths = data["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) > 3, "the slice must mix lengths for the order to matter"
    teacher = AutoModelForQuestionAnswering.from_pretrained(teacher_dir)
    cpu = torch.device("cpu")
    cached, hit = cached_teacher_logits(
        teacher, "fp", data, {}, batch_size=7, directory=tmp_path, device=cpu, precision="fp32"
    )
    assert not hit
    with torch.inference_mode():
        for i in range(len(lengths)):
            n = int(lengths[i])
            one = teacher(**{k: data[k][i : i + 1, :n] for k in ("input_ids", "attention_mask")})
            torch.testing.assert_close(
                torch.from_numpy(cached[i, :n, 0].copy()), one.start_logits[0], atol=1e-4, rtol=1e-4
            )
            torch.testing.assert_close(
                torch.from_numpy(cached[i, :n, 1].copy()), one.end_logits[0], atol=1e-4, rtol=1e-4
            )

    again, hit = cached_teacher_logits(teacher, "fp", data, {}, directory=tmp_path, device=cpu, precision="fp32")
    assert hit
    bf16, hit = cached_teacher_logits(teacher, "fp", data, {}, directory=tmp_path, device=cpu, precision="bf16")
    assert not hit, "another precision is another cache entry"
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not list(tmp_path.glob(".*partial*"))
    assert np.abs(bf16 - again).max() < 0.5  # bf16 rounds, it does not change the answer
