"""Reduced precision stays within the accuracy budget on a trained model (the check behind `auto`).

A model is fine-tuned here on a dev slice (2 layers x 128, ~1 minute on 2 cores) and scored with the
official metric on that slice at each precision: bf16 must stay within 0.5 F1 of fp32, int8 within
1.0. Training and scoring on the same questions is memorisation, not generalisation, but it gives a
model that really answers (the HasAns guard), which is what a precision comparison needs.
"""

from __future__ import annotations

import json

import pytest

from distilqa.inference import (
    cpu_has_amx_bf16,
    cpu_has_avx2,
    cpu_has_int8_dot,
    cpu_has_native_bf16,
    resolve_precision,
)
from distilqa.squad import Article, SquadDataset, write_squad
from tests.conftest import run_cli

WINDOW = ["--max-seq-len", "192", "--doc-stride", "96"]
BUDGET = {"bf16": 0.5, "int8": 1.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dev_set, contexts):
    from distilqa.local_models import random_qa_model, train_tokenizer

    work = tmp_path_factory.mktemp("precision")
    data = work / "slice.json"
    write_squad(SquadDataset([Article(a.title, a.paragraphs[:8]) for a in dev_set.articles[:6]]), data)
    train_tokenizer(contexts, work / "tok", "bpe", vocab_size=8000)
    random_qa_model(work / "tok", work / "init", num_layers=2, hidden_size=128, num_heads=4)
    result = run_cli(
        "finetune",
        str(work / "init"),
        str(data),
        "-o",
        str(work / "model"),
        *WINDOW,
        "--epochs",
        "8",
        "--batch-size",
        "16",
        "--per-device-batch-size",
        "16",
        "--lr",
        "2e-3",
        "--warmup-ratio",
        "0.1",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return work / "model", data


def score(model, data, tmp_path, precision: str) -> dict:
    pred = tmp_path / f"pred-{precision}.json"
    result = run_cli("predict", str(model), str(data), "-o", str(pred), "--precision", precision, *WINDOW)
    assert result.returncode == 0, result.stderr[-2000:]
    scored = run_cli("eval", str(data), str(pred))
    assert scored.returncode == 0, scored.stderr
    return json.loads(scored.stdout)


@pytest.mark.slow
def test_reduced_precision_stays_within_the_accuracy_budget(trained, tmp_path):
    model, data = trained
    fp32 = score(model, data, tmp_path, "fp32")
    assert fp32["HasAns_f1"] > 20, "the model must really answer for the comparison to mean anything"
    for precision, budget in BUDGET.items():
        reduced = score(model, data, tmp_path, precision)
        print(
            f"{precision}: F1 {reduced['f1']:.2f} HasAns {reduced['HasAns_f1']:.2f} NoAns {reduced['NoAns_f1']:.2f}"
            f" (fp32 {fp32['f1']:.2f} / {fp32['HasAns_f1']:.2f} / {fp32['NoAns_f1']:.2f})"
        )  # the docs' table
        assert abs(reduced["f1"] - fp32["f1"]) <= budget, (precision, reduced["f1"], fp32["f1"])


def test_auto_picks_the_verified_fast_path():
    if cpu_has_amx_bf16():
        expected = "bf16"
    else:
        expected = (
            "int8" if cpu_has_int8_dot() else "bf16" if cpu_has_native_bf16() else "int8" if cpu_has_avx2() else "fp32"
        )
    assert resolve_precision("auto") == expected
