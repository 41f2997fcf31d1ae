"""`distilqa eval` is the official SQuAD 2.0 metric: every conformance number, every bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from distilqa.metric import compute_exact, compute_f1, evaluate, normalize_answer
from distilqa.squad import DEFAULT_DEV_SET
from tests.conftest import CONFORMANCE, assert_clean_failure, read_json, run_cli

SYSTEMS = ["bert-single", "nlnet-single", "bidaf-elmo-single"]
DEV = str(DEFAULT_DEV_SET)


def assert_same_numbers(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected), "keys or their order differ from evaluate-v2.0.py"
    for key, value in expected.items():
        assert math.isclose(actual[key], value, rel_tol=0, abs_tol=1e-9), (key, actual[key], value)


@pytest.mark.parametrize("system", SYSTEMS)
def test_cli_matches_official_output(system):
    result = run_cli("eval", DEV, str(CONFORMANCE / f"{system}.predictions.json"))
    assert result.returncode == 0, result.stderr
    assert_same_numbers(json.loads(result.stdout), read_json(CONFORMANCE / f"{system}.expected.json"))


@pytest.mark.parametrize("system", SYSTEMS)
def test_cli_matches_official_output_with_na_probs(system, tmp_path):
    out_file = tmp_path / "eval.json"
    result = run_cli(
        "eval",
        DEV,
        str(CONFORMANCE / f"{system}.predictions.json"),
        "--na-prob-file",
        str(CONFORMANCE / f"{system}.na_prob.json"),
        "--out-file",
        str(out_file),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # like the official script: --out-file replaces stdout
    assert_same_numbers(read_json(out_file), read_json(CONFORMANCE / f"{system}.expected_with_na_prob.json"))


def test_short_option_names_and_threshold(tmp_path):
    """-n/-t/-o as in evaluate-v2.0.py; a threshold of 0 turns every positive na-prob into "" ."""
    system = "bert-single"
    result = run_cli(
        "eval",
        DEV,
        str(CONFORMANCE / f"{system}.predictions.json"),
        "-n",
        str(CONFORMANCE / f"{system}.na_prob.json"),
        "-t",
        "0.0",
        "-o",
        str(tmp_path / "e.json"),
    )
    assert result.returncode == 0, result.stderr
    scores = read_json(tmp_path / "e.json")
    # every synthetic na-prob is > 0, so every question is answered "": NoAns all right, HasAns all wrong
    assert scores["NoAns_exact"] == 100.0 and scores["HasAns_exact"] == 0.0


def test_precision_recall_images(tmp_path):
    system = "nlnet-single"
    images = tmp_path / "images"
    result = run_cli(
        "eval",
        DEV,
        str(CONFORMANCE / f"{system}.predictions.json"),
        "--na-prob-file",
        str(CONFORMANCE / f"{system}.na_prob.json"),
        "--out-image-dir",
        str(images),
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    for name in ("pr_exact", "pr_f1", "pr_oracle", "na_prob_hist_hasAns", "na_prob_hist_noAns"):
        data = (images / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    for key in ("pr_exact_ap", "pr_f1_ap", "pr_oracle_ap"):
        assert 0.0 < scores[key] <= 100.0
    expected = read_json(CONFORMANCE / f"{system}.expected_with_na_prob.json")
    assert_same_numbers({k: scores[k] for k in expected}, expected)


def test_table_format_for_people():
    result = run_cli("eval", DEV, str(CONFORMANCE / "bert-single.predictions.json"), "--format", "table")
    assert result.returncode == 0
    assert "HasAns" in result.stdout and "78.74" in result.stdout and "81.78" in result.stdout


def test_eval_imports_no_heavy_package():
    code = (
        "import sys; from distilqa.cli import main;"
        f"rc = main(['eval', {DEV!r}, {str(CONFORMANCE / 'bert-single.predictions.json')!r}, '-o', '/dev/null']);"
        "heavy = [m for m in ('torch', 'transformers', 'kfp', 'mlflow', 'kserve', 'numpy') if m in sys.modules];"
        "assert rc == 0 and not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("gold", "pred", "em", "f1"),
    [
        ("The Norman conquest", "norman conquest", 1, 1.0),  # case, article
        ("Denmark, Iceland and Norway", "Denmark Iceland", 0, 2 / 3),  # P = 2/2, R = 2/4
        ("10th century", "the 10th-century", 0, 0.0),  # punctuation is deleted, not split on
        ("", "", 1, 1.0),  # no answer, predicted no answer
        ("", "something", 0, 0.0),
        ("a an the", "", 1, 1.0),  # normalises to nothing
        ("France", "Paris", 0, 0.0),
    ],
)
def test_exact_and_f1_by_hand(gold, pred, em, f1):
    assert compute_exact(gold, pred) == em
    assert compute_f1(gold, pred) == pytest.approx(f1, abs=1e-12)


def test_normalize_answer():
    assert normalize_answer("  The  Quick, brown fox!  ") == "quick brown fox"
    assert normalize_answer("theatre an answer") == "theatre answer"  # \b keeps words containing 'the'


def test_evaluate_in_process_matches_cli(dev_set):
    preds = read_json(CONFORMANCE / "bidaf-elmo-single.predictions.json")
    expected = read_json(CONFORMANCE / "bidaf-elmo-single.expected.json")
    assert_same_numbers(evaluate(dev_set, preds), expected)


# ----------------------------------------------------------------------------------- bad input


def _write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def test_predictions_that_are_a_list(tmp_path):
    pred = _write(tmp_path, "pred.json", '["Normandy", "France"]')
    assert_clean_failure(run_cli("eval", DEV, pred), "pred.json", "must be a JSON object", "list")


def test_non_string_answer(tmp_path):
    preds = read_json(CONFORMANCE / "bert-single.predictions.json")
    qid = next(iter(preds))
    preds[qid] = 42
    pred = _write(tmp_path, "pred.json", json.dumps(preds))
    assert_clean_failure(run_cli("eval", DEV, pred), "not strings", qid, "int")


def test_unreadable_json(tmp_path):
    pred = _write(tmp_path, "pred.json", '{"a": "b",')
    assert_clean_failure(run_cli("eval", DEV, pred), "pred.json", "invalid JSON", "line 1")


def test_binary_garbage(tmp_path):
    pred = _write(tmp_path, "pred.json", b"\xff\xfe\x00garbage")
    assert_clean_failure(run_cli("eval", DEV, pred), "pred.json", "not UTF-8")


def test_missing_files(tmp_path):
    assert_clean_failure(run_cli("eval", DEV, str(tmp_path / "nope.json")), "nope.json", "no such file")
    assert_clean_failure(
        run_cli("eval", str(tmp_path / "data.json"), str(CONFORMANCE / "bert-single.predictions.json")),
        "data.json",
        "no such file",
    )


def test_missing_predictions_are_reported_not_scored(tmp_path):
    preds = read_json(CONFORMANCE / "bert-single.predictions.json")
    missing = list(preds)[:3]
    for qid in missing:
        del preds[qid]
    pred = _write(tmp_path, "pred.json", json.dumps(preds))
    assert_clean_failure(run_cli("eval", DEV, pred), "missing for 3 of the 11873", missing[0])


def test_bad_na_prob_file(tmp_path):
    na = read_json(CONFORMANCE / "bert-single.na_prob.json")
    qid = next(iter(na))
    na[qid] = "high"
    na_file = _write(tmp_path, "na.json", json.dumps(na))
    result = run_cli("eval", DEV, str(CONFORMANCE / "bert-single.predictions.json"), "--na-prob-file", na_file)
    assert_clean_failure(result, "na.json", qid, "finite number")


def test_bad_threshold_type():
    result = run_cli("eval", DEV, str(CONFORMANCE / "bert-single.predictions.json"), "-t", "lots")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "-t" in result.stderr


def test_extra_prediction_ids_are_ignored_with_a_warning(tmp_path):
    preds = read_json(CONFORMANCE / "bert-single.predictions.json")
    preds["not-a-question"] = "x"
    pred = _write(tmp_path, "pred.json", json.dumps(preds))
    result = run_cli("eval", DEV, pred)
    assert result.returncode == 0
    assert "1 prediction(s) for ids not in" in result.stderr
    assert_same_numbers(json.loads(result.stdout), read_json(CONFORMANCE / "bert-single.expected.json"))
