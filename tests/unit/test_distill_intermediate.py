"""Stage S2a: the student learns the teacher's hidden states and attentions; setups that cannot work fail."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_clean_failure, run_cli

WINDOW = ["--max-seq-len", "128", "--doc-stride", "64"]
TRAIN = ["--epochs", "2", "--batch-size", "16", "--per-device-batch-size", "16", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, bpe_tokenizer_dir):
    from distilqa.local_models import random_qa_model

    root = tmp_path_factory.mktemp("s2a")
    make = lambda name, **shape: random_qa_model(bpe_tokenizer_dir, root / name, **shape)  # noqa: E731
    return {
        "teacher": make("teacher", num_layers=4, hidden_size=96, num_heads=4, seed=5),
        "student": make("student", num_layers=2, hidden_size=64, num_heads=4, seed=3),
        "student_2heads": make("student2h", num_layers=2, hidden_size=64, num_heads=2, seed=3),
        "student_3layers": make("student3l", num_layers=3, hidden_size=64, num_heads=4, seed=3),
    }


def distill(models, teacher, student, data, out, *extra):
    return run_cli(
        "distill",
        "--stage",
        "intermediate",
        "--teacher",
        str(models[teacher]),
        "--student",
        str(models[student]),
        str(data),
        "-o",
        str(out),
        *WINDOW,
        *TRAIN,
        *extra,
    )


def test_student_learns_the_teachers_internals(models, dev_slice_file, tmp_path):
    result = distill(models, "teacher", "student", dev_slice_file, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "training_record.json").read_text())
    assert record["layer_map"] == {"0": 0, "1": 2, "2": 4} and record["projections"] is True
    result_ = record["result"]
    assert result_["last_step_loss"] < 0.7 * result_["first_step_loss"], result_
    assert {"hidden", "attention"} <= set(result_["mean_terms_this_run"])
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_head_counts_must_match_unless_attention_is_off(models, dev_slice_file, tmp_path):
    refused = distill(models, "teacher", "student_2heads", dev_slice_file, tmp_path / "a")
    assert_clean_failure(refused, "head counts", "--attention-target none")
    hidden_only = distill(
        models,
        "teacher",
        "student_2heads",
        dev_slice_file,
        tmp_path / "b",
        "--attention-target",
        "none",
        "--epochs",
        "1",
    )
    assert hidden_only.returncode == 0, hidden_only.stderr[-2000:]
    terms = json.loads((tmp_path / "b" / "training_record.json").read_text())["result"]["mean_terms_this_run"]
    assert "attention" not in terms and "hidden" in terms


def test_layer_counts_must_divide(models, dev_slice_file, tmp_path):
    assert_clean_failure(distill(models, "teacher", "student_3layers", dev_slice_file, tmp_path / "c"), "multiple")
