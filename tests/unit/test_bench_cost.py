"""`distilqa bench cost`: stage FLOPs of a profile turned into node-hours at a measured or given MFU."""

from __future__ import annotations

import json

import pytest

from distilqa.bench.cost import BASE, STUDENT, Encoder
from tests.conftest import assert_clean_failure, run_cli


def test_flop_count_matches_the_training_benchmark_on_a_real_model():
    from transformers import RobertaConfig, RobertaForQuestionAnswering

    from distilqa.bench.train_speed import forward_flops_per_token

    config = RobertaConfig(
        vocab_size=1000,
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=384,
        max_position_embeddings=514,
    )
    model = RobertaForQuestionAnswering(config)
    ours = Encoder(3, 96, 384).forward_flops_per_token(384)
    assert ours == pytest.approx(forward_flops_per_token(model, 384), rel=0.01)  # the QA head is the difference
    assert BASE.forward_flops_per_token(384) > 1.9 * STUDENT.forward_flops_per_token(384)


def test_cost_table_scales_with_mfu_and_skips_s1_for_a_ready_student(tmp_path):
    def table(*extra: str) -> dict:
        out = tmp_path / "cost.json"
        result = run_cli("bench", "cost", "--profile", "production", "--output", str(out), *extra)
        assert result.returncode == 0, result.stderr
        assert "| **total** |" in result.stdout
        return {r["stage"]: r for r in json.loads(out.read_text())["stages"]}

    at30, at60 = table("--mfu", "0.3"), table("--mfu", "0.6")
    s2a = "S2a intermediate distillation"
    assert at30[s2a]["pool_hours"] == pytest.approx(2 * at60[s2a]["pool_hours"], rel=0.01)
    assert at30[s2a]["windows"] == 132_000 * 21 * 5  # x20 augmentation + originals, 5 epochs (production profile)
    assert max(at30.values(), key=lambda r: r["pflop"])["stage"] == s2a  # RECIPE: S2a dominates the compute
    assert "S1 general distillation" not in table("--set", "models.student_backbone=s3://b/student")
    fewer = table("--set", "intermediate.epochs=1")
    assert fewer[s2a]["pflop"] == pytest.approx(at30[s2a]["pflop"] / 5, rel=0.01)


def test_mfu_comes_from_a_gpu_benchmark_when_given(tmp_path):
    bench = tmp_path / "bench-train.json"
    bench.write_text(
        json.dumps(
            [
                {"stage": "s2a", "device": "Tesla V100-SXM2-16GB", "mfu_vs_datasheet": 0.42},
                {"stage": "s2b", "device": "Tesla V100-SXM2-16GB", "mfu_vs_datasheet": 0.5},
            ]
        )
    )
    result = run_cli("bench", "cost", "--bench-json", str(bench))
    assert result.returncode == 0 and "MFU 42% measured on V100" in result.stdout
    cpu_only = tmp_path / "cpu.json"
    cpu_only.write_text(json.dumps([{"stage": "s2a", "device": "cpu", "mfu_vs_measured_peak": 0.4}]))
    assert_clean_failure(run_cli("bench", "cost", "--bench-json", str(cpu_only)), "no V100 measurement")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mfu", "0"], "--mfu"),
        (["--mfu", "1.5"], "--mfu"),
        (["--pool", "p9.huge"], "--pool"),
        (["--price", "-1"], "--price"),
        (["--set", "intermediate.lr=-1"], "lr"),
    ],
)
def test_bad_cost_arguments_are_clean_errors(args, message):
    assert_clean_failure(run_cli("bench", "cost", *args), message)
