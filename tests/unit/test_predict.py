"""`distilqa predict` answers exactly as the standard decoding does on an unbatched forward pass."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distilqa.decode import DecodeConfig
from distilqa.errors import ConfigError
from distilqa.inference import BatchConfig, QAModel
from distilqa.squad import load_squad
from distilqa.windows import WindowConfig
from tests.conftest import assert_clean_failure, run_cli

MAX_SEQ_LEN = 256  # about half of the slice fits one window; the rest needs several


def reference_single_window(model_dir, dataset):
    """Question id -> (best span text, null - best) for the questions that fit one window, computed the plain way:
    one unpadded forward pass per question, then every (start, end) among the top-20 starts and ends."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    out = {}
    for _, p, qa in dataset.iter_questions():
        question = qa.question.lstrip()
        if len(tok(question, add_special_tokens=False)["input_ids"]) > 64:
            continue
        enc = tok(question, p.context, return_offsets_mapping=True)
        if len(enc["input_ids"]) > MAX_SEQ_LEN:
            continue
        inputs = {k: torch.tensor([enc[k]]) for k in tok.model_input_names}
        with torch.inference_mode():
            result = model(**inputs)
        s, e = result.start_logits[0].numpy(), result.end_logits[0].numpy()
        ctx = [i for i, sid in enumerate(enc.sequence_ids()) if sid == 1]
        top_s, top_e = set(np.argsort(s)[-20:].tolist()), set(np.argsort(e)[-20:].tolist())
        best = None
        for i in ctx:
            for j in ctx:
                if i in top_s and j in top_e and i <= j < i + 30:
                    score = float(s[i]) + float(e[j])
                    if best is None or score > best[0]:
                        best = (score, enc["offset_mapping"][i][0], enc["offset_mapping"][j][1])
        null = float(s[0]) + float(e[0])
        diff = null - best[0]
        out[qa.id] = (p.context[best[1] : best[2]], diff)
    return out


@pytest.mark.parametrize("model_fixture", ["tiny_roberta_dir", "tiny_bert_dir"])
def test_predict_cli_equals_standard_decoding(request, model_fixture, dev_slice_file, tmp_path):
    model_dir = request.getfixturevalue(model_fixture)
    dataset = load_squad(dev_slice_file)
    ref = reference_single_window(model_dir, dataset)
    assert len(ref) >= 40, "too few single-window questions to mean anything"
    assert len(ref) < dataset.num_questions, "no multi-window question in the slice"
    diffs = sorted(d for _, d in ref.values())
    median = diffs[len(diffs) // 2]
    # thresholds: the default, and midpoints between neighbouring diffs, so decisions flip but no tie is near
    i = len(diffs) // 4
    thresholds = [0.0, (diffs[i] + diffs[i + 1]) / 2, (median + diffs[len(diffs) // 2 + 1]) / 2]
    for n, threshold in enumerate(thresholds):
        pred_file, na_file = tmp_path / f"pred{n}.json", tmp_path / f"na{n}.json"
        result = run_cli(
            "predict",
            str(model_dir),
            str(dev_slice_file),
            "-o",
            str(pred_file),
            "--na-prob-out",
            str(na_file),
            "--max-seq-len",
            str(MAX_SEQ_LEN),
            "--doc-stride",
            "64",
            "--batch-size",
            "7",
            "--null-score-diff-threshold",
            repr(threshold),
            "--precision",
            "fp32",
        )
        assert result.returncode == 0, result.stderr
        preds, na_probs = json.loads(pred_file.read_text()), json.loads(na_file.read_text())
        assert set(preds) == set(na_probs) == set(dataset.has_answer())
        want = {qid: "" if diff > threshold else span for qid, (span, diff) in ref.items()}
        mismatches = {qid: (preds[qid], text) for qid, text in want.items() if preds[qid] != text}
        assert not mismatches, mismatches
        if n:  # a threshold that splits the questions really changes answers
            answered = sum(1 for qid in ref if preds[qid])
            assert 0 < answered < len(ref)
        for qid, (_, diff) in ref.items():
            assert na_probs[qid] == pytest.approx(1 / (1 + math.exp(-diff)), abs=1e-5)
    # the predictions are a valid input to the official metric
    scored = run_cli("eval", str(dev_slice_file), str(tmp_path / "pred0.json"), "-n", str(tmp_path / "na0.json"))
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["total"] == dataset.num_questions


def test_dynamic_padding_does_not_change_answers(tiny_roberta_dir, dev_slice_file):
    model = QAModel.load(tiny_roberta_dir)
    examples = load_squad(dev_slice_file).examples()
    window = WindowConfig(max_seq_len=MAX_SEQ_LEN, doc_stride=64)
    sorted_ = model.answer(examples, window, DecodeConfig(), BatchConfig(16, sort_by_length=True))
    padded = model.answer(examples, window, DecodeConfig(), BatchConfig(5, sort_by_length=False))
    assert [a.text for a in sorted_] == [a.text for a in padded]
    assert np.allclose([a.null_score for a in sorted_], [a.null_score for a in padded], atol=1e-4)


def test_predict_rejects_bad_arguments(tiny_roberta_dir, dev_slice_file, tmp_path):
    out = str(tmp_path / "p.json")
    assert_clean_failure(
        run_cli("predict", str(tmp_path / "no-model"), str(dev_slice_file), "-o", out), "no-model", "no such model"
    )
    (tmp_path / "empty").mkdir()
    assert_clean_failure(run_cli("predict", str(tmp_path / "empty"), str(dev_slice_file), "-o", out), "config.json")
    assert_clean_failure(
        run_cli("predict", str(tiny_roberta_dir), str(dev_slice_file), "-o", out, "--doc-stride", "400"), "doc_stride"
    )
    assert_clean_failure(
        run_cli("predict", str(tiny_roberta_dir), str(dev_slice_file), "-o", out, "--batch-size", "0"), "batch_size"
    )
    assert_clean_failure(
        run_cli("predict", str(tiny_roberta_dir), str(tmp_path / "x.json"), "-o", out), "x.json", "no such file"
    )
    assert not (tmp_path / "p.json").exists()  # nothing half-written


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_paths(tiny_roberta_dir, dev_slice_file, precision):
    examples = load_squad(dev_slice_file).examples()[:30]
    window = WindowConfig(max_seq_len=MAX_SEQ_LEN, doc_stride=64)
    fp32 = QAModel.load(tiny_roberta_dir).answer(examples, window)
    reduced = QAModel.load(tiny_roberta_dir, precision)
    assert reduced.precision == precision
    answers = reduced.answer(examples, window)
    # a random model's logits are nearly tied, so some answers move; most must not
    same = sum(a.text == b.text for a, b in zip(fp32, answers, strict=True))
    assert same >= 0.7 * len(examples)
    assert all(e.context[a.start : a.end] == a.text for e, a in zip(examples, answers, strict=True) if a.text)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "avx512_vnni", "avx512_bf16"}, "int8"),  # AVX-512 EPYC: fbgemm int8 is the fast path
        ({"avx2", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}, "bf16"),  # AMX Xeon: bf16 tiles win
        ({"avx2", "avx_vnni"}, "int8"),
        ({"avx2", "avx512_bf16"}, "bf16"),
        ({"avx2", "fma"}, "int8"),  # AVX2-only EPYC (Zen 3): fbgemm int8 1.5x fp32, bf16 emulated
        ({"sse4_2", "avx"}, "fp32"),  # no AVX2: fbgemm has no int8 kernels
        (set(), "fp32"),  # no /proc/cpuinfo (macOS): the safe path
    ],
)
def test_auto_precision_follows_the_cpu(monkeypatch, flags, expected):
    from distilqa import inference

    monkeypatch.setattr(inference, "cpu_flags", lambda: flags)
    assert inference.resolve_precision("auto") == expected
    assert inference.resolve_precision("fp32") == "fp32"  # an explicit choice is kept


def test_bad_precision():
    from distilqa.inference import resolve_precision

    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp8")


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_reduced_precision_answers_do_not_depend_on_batching(tiny_roberta_dir, dev_slice_file, precision):
    """The server groups questions as they arrive; each window must still compute bit-identically."""
    examples = load_squad(dev_slice_file).examples()[:40]
    model = QAModel.load(tiny_roberta_dir, precision)
    window = WindowConfig(max_seq_len=MAX_SEQ_LEN, doc_stride=64)
    windower = model.windower(window)
    features = windower.features([e.question for e in examples], [e.context for e in examples])
    alone = model.logits(features, windower, BatchConfig(1))
    together = model.logits(features, windower, BatchConfig(32, max_pad_fraction=1.0))  # reduced: no padding
    for (s1, e1), (s2, e2) in zip(alone, together, strict=True):
        assert np.array_equal(s1, s2) and np.array_equal(e1, e2)
    reference = model.answer(examples, window, batch=BatchConfig(32))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(examples))
    grouped, start = {}, 0
    for size in (1, 3, 7, 29):  # serve-like: shuffled, uneven groups
        group = [examples[i] for i in order[start : start + size]]
        start += size
        for e, a in zip(group, model.answer(group, window, batch=BatchConfig(size)), strict=True):
            grouped[e.id] = a
    assert grouped == {e.id: a for e, a in zip(examples, reference, strict=True)}


def test_length_buckets_bound_padding_and_keep_every_window():
    lengths = [384, 60, 380, 200, 190, 61, 384, 100, 95, 70]
    chunks = BatchConfig(4, max_pad_fraction=0.1).chunks(lengths)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    for chunk in chunks:
        assert len(chunk) <= 4
        assert min(lengths[i] for i in chunk) >= 0.9 * max(lengths[i] for i in chunk)
    assert [[lengths[i] for i in c] for c in chunks] == [[384, 384, 380], [200, 190], [100, 95], [70], [61, 60]]
    # without sorting: input order, fixed-size batches (the naive baseline of bench predict)
    assert BatchConfig(4, sort_by_length=False).chunks(lengths) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ConfigError, match="max_pad_fraction"):
        BatchConfig(4, max_pad_fraction=1.5)


def test_length_buckets_do_not_change_fp32_answers(tiny_roberta_dir, dev_slice_file):
    examples = load_squad(dev_slice_file).examples()[:40]
    model = QAModel.load(tiny_roberta_dir, "fp32")
    window = WindowConfig(max_seq_len=MAX_SEQ_LEN, doc_stride=64)
    one_bucket = model.answer(examples, window, DecodeConfig(), BatchConfig(16, max_pad_fraction=1.0))
    tight = model.answer(examples, window, DecodeConfig(), BatchConfig(16, max_pad_fraction=0.0))
    assert [a.text for a in one_bucket] == [a.text for a in tight]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_parallel_forward_passes_give_the_sequential_logits(tiny_roberta_dir, dev_slice_file, precision):
    """`--workers` only runs passes at once: at one torch thread count, every window's logits are unchanged."""
    import torch

    examples = load_squad(dev_slice_file).examples()[:40]
    model = QAModel.load(tiny_roberta_dir, precision)
    windower = model.windower(WindowConfig(max_seq_len=MAX_SEQ_LEN, doc_stride=64))
    features = windower.features([e.question for e in examples], [e.context for e in examples])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sequential = model.logits(features, windower, BatchConfig(4))
        parallel = model.logits(features, windower, BatchConfig(4, workers=3))
    finally:
        torch.set_num_threads(threads)
    assert len(parallel) == len(features)
    for (s1, e1), (s2, e2) in zip(sequential, parallel, strict=True):
        assert np.array_equal(s1, s2) and np.array_equal(e1, e2)


def test_workers_must_be_positive():
    with pytest.raises(ConfigError, match="workers"):
        BatchConfig(workers=0)
