"""The MiniLM proof's verdict is computed, not written: check the rule it applies."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def proof():
    spec = importlib.util.spec_from_file_location("proof_minilm", ROOT / "scripts" / "proof_minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def render(proof):
    return proof.render


def _result(ft: float, matched: float, distilled: float, reused: bool = False) -> dict:
    def row(name: str, d: str, f1: float) -> dict:
        return {
            "model": name,
            "dir": d,
            "params": 17e6,
            "exact": f1 - 1,
            "f1": f1,
            "HasAns_exact": 1.0,
            "HasAns_f1": 2.0,
            "NoAns_exact": 3.0,
            "questions_per_s": 50.0,
        }

    return {
        "heldout_questions": 1978,
        "cpu_threads": 2,
        "settings": {"epochs": 2, "s2a_epochs": 1},
        "rows": [
            row("ft", "student-finetuned", ft),
            row("ft matched", "student-finetuned-matched", matched),
            row("distilled", "student-distilled", distilled),
        ],
        "stages": [{"stage": "teacher fine-tune", "command": "distilqa finetune x", "seconds": 12.0, "reused": reused}],
    }


def _without(result: dict, row: int, setting: str) -> dict:
    """A result whose run skipped a model with the flag that skips it."""
    result["rows"].pop(row)
    result["settings"][setting] = True
    return result


def test_distillation_must_beat_every_control(render) -> None:
    assert "**Distillation beats fine-tuning alone**" in render(_result(50.0, 52.0, 55.0))
    # beating the short control but not the matched-epochs one is not a win
    text = render(_result(50.0, 56.0, 55.0))
    assert "**Distillation does NOT beat fine-tuning alone**" in text
    assert "-1.00 F1 vs ft matched" in text and "+5.00 F1 vs ft" in text


def test_reused_stages_are_marked(render) -> None:
    assert "12.0 †" in render(_result(1, 2, 3, reused=True))
    assert "†" not in render(_result(1, 2, 3, reused=False))


def test_best_threshold_columns_are_shown_when_measured(render) -> None:
    result = _result(50.0, 52.0, 55.0)
    result["rows"][2].update(best_exact=57.25, best_f1=59.5)
    lines = render(result).splitlines()
    distilled = next(line for line in lines if line.startswith("| distilled |"))
    assert "| 57.25 | 59.50 |" in distilled
    # older results (no na-prob file) still render, with the columns marked as not measured
    ft = next(line for line in lines if line.startswith("| ft |"))
    assert "| nan | nan |" in ft


def test_a_skipped_matched_control_is_said(render) -> None:
    text = render(_without(_result(50.0, 0.0, 55.0), row=1, setting="no_matched_control"))
    assert "**Distillation beats fine-tuning alone**" in text and "not run for this result" in text
    assert "not run" not in render(_result(50.0, 52.0, 55.0))


def test_controls_alone_render_without_a_verdict(render) -> None:
    text = render(_without(_result(50.0, 52.0, 0.0), row=2, setting="controls_only"))
    assert "**No verdict:**" in text and "`--controls-only`" in text
    assert "Distillation beats" not in text and "does NOT beat" not in text
    assert "| ft matched |" in text


def test_a_non_recipe_s2b_variant_is_judged_too(render) -> None:
    result = _result(50.0, 52.0, 55.0)
    result["rows"][2]["dir"] = "student-distilled-w0.25-t1.5"
    assert "**Distillation beats fine-tuning alone**" in render(result)
    result["rows"][2]["f1"] = 51.0
    assert "**Distillation does NOT beat fine-tuning alone**" in render(result)


def test_the_no_answer_baseline_scores_abstaining_with_the_official_metric(proof) -> None:
    from distilqa.squad import parse_squad

    context = "Normandy is a region in France."
    qas = [
        {
            "id": "a",
            "question": "Where is Normandy?",
            "answers": [{"text": "France", "answer_start": 24}],
            "is_impossible": False,
        },
        {"id": "b", "question": "Who ate Normandy?", "answers": [], "is_impossible": True},
        {"id": "c", "question": "Who sold Normandy?", "answers": [], "is_impossible": True},
    ]
    data = parse_squad({"version": "v2.0", "data": [{"title": "N", "paragraphs": [{"context": context, "qas": qas}]}]})
    base = proof.no_answer_baseline(data)
    assert base["exact"] == pytest.approx(200 / 3) and base["f1"] == pytest.approx(200 / 3)
    assert base["HasAns_exact"] == 0.0 and base["NoAns_exact"] == 100.0


def test_models_below_the_no_answer_baseline_are_called_out(render) -> None:
    result = _result(50.0, 52.0, 55.0)  # EM is F1 - 1: 49, 51, 54
    result["rows"].insert(0, {**result["rows"][0], "model": "teacher", "dir": "teacher", "exact": 47.0})
    result["baseline"] = {"exact": 50.2, "f1": 50.2, "NoAns_exact": 100.0}
    text = render(result)
    assert '| always "no answer" (no model) | 0 | 0 | 50.20 | 50.20 |' in text
    assert "2 of 4 models, the teacher among them, score no more EM" in text
    # every model above the floor: the row stays, the caveat goes
    result["baseline"] = {"exact": 40.0, "f1": 40.0, "NoAns_exact": 100.0}
    text = render(result)
    assert '| always "no answer" (no model) | 0 | 0 | 40.00 |' in text and "Caveat" not in text
    # results without a baseline (older JSON) render as before
    del result["baseline"]
    assert "no answer" not in render(result)


def test_an_augmented_distillation_is_judged_and_said(render) -> None:
    result = _result(50.0, 52.0, 55.0)
    result["rows"][2]["dir"] = "student-distilled-aug2"
    result["settings"]["augment_factor"] = 2
    text = render(result)
    assert "**Distillation beats fine-tuning alone**" in text
    assert "plus 2 augmented copies" in text and "about 3x the controls' optimizer steps" in text
    assert "augmented" not in render(_result(50.0, 52.0, 55.0))


@pytest.mark.parametrize(
    ("flag", "value"), [("--augment-factor", "-1"), ("--epochs", "0"), ("--s2a-epochs", "0"), ("--s2b-epochs", "0")]
)
def test_out_of_range_counts_stop_before_any_work(flag, value, tmp_path) -> None:
    import subprocess
    import sys

    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "proof_minilm.py"), flag, value, "--work-dir", str(work)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and f"{flag} must be at least" in done.stderr and "Traceback" not in done.stderr
    assert not work.exists()


def test_budgets_follow_the_settings_and_steps_are_shown(render) -> None:
    result = _result(50.0, 52.0, 55.0)
    for row, steps in zip(result["rows"], (1706, 2559, 5118), strict=True):
        row["steps"] = steps
    result["settings"].update(s2b_epochs=1, augment_factor=2)
    text = render(result)
    assert "the first control trains 2 epoch(s), S2b 1 epoch(s)" in text
    assert "the second control fine-tunes for 3 epochs" in text
    assert "plus 2 augmented copies" in text and "about 3x the controls' optimizer steps" in text
    distilled = next(line for line in text.splitlines() if line.startswith("| distilled |"))
    assert distilled.startswith("| distilled | 17.0M | 5118 | 54.00 | 55.00 |")
    # results written before the steps column and --s2b-epochs existed still render, in the old words
    old = render(_result(50.0, 52.0, 55.0))
    assert "steps column" not in old
    assert "S2b and the first control train 2 epoch(s)" in old and "| ft | 17.0M |  | 49.00 |" in old


def test_training_steps_add_a_models_stages_once(proof, tmp_path) -> None:
    for stage, steps in (("teacher", 1706), ("student-s2a-aug2", 2559), ("student-distilled-e1-aug2", 2559)):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "training_record.json").write_text(json.dumps({"result": {"steps": steps}}))
    assert proof.training_steps(tmp_path, ["student-s2a-aug2", "student-distilled-e1-aug2"]) == 5118
    # a teacher without a second phase names its one directory twice
    assert proof.training_steps(tmp_path, ["teacher", "teacher"]) == 1706


def test_a_reused_stage_reports_its_training_time_over_every_run(proof, tmp_path, render) -> None:
    def stage(name: str, **result) -> Path:
        out = tmp_path / name
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"")
        (out / "training_record.json").write_text(json.dumps({"result": {"wall_seconds": 300.0, **result}}))
        return out

    log: list[dict] = []
    resumed = stage("resumed", resumed_from_step=1400, wall_seconds_total=4000.0)
    assert proof.sh(log, "teacher", "finetune", output=resumed, reuse=True) == 4000.0
    # a run resumed from a checkpoint that predates run totals has only its last run's seconds
    old = stage("old", resumed_from_step=1400, wall_seconds_total=None)
    assert proof.sh(log, "old teacher", "finetune", output=old, reuse=True) == 300.0
    plain = stage("plain")
    assert proof.sh(log, "student", "finetune", output=plain, reuse=True) == 300.0
    result = _result(50.0, 52.0, 55.0)
    result["stages"] = log
    text = render(result)
    assert "| teacher | 4000.0 † (resumed at step 1400) |" in text
    assert "| old teacher | 300.0 † (resumed at step 1400, last run only) |" in text
    assert "| student | 300.0 † |" in text
