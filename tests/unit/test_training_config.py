"""One definition of every training setting: the precision rule, flags and profile sections derived from the
library's classes, job files validated at the edge, and checkpoints that exist whole or not at all."""

from __future__ import annotations

import dataclasses

import pytest

from distilqa.distill.checkpoints import CheckpointStore
from distilqa.distill.config import STAGE_SETTINGS, GeneralConfig, PredictionConfig, StageJob, TrainConfig
from distilqa.distill.precision import resolve_amp
from distilqa.errors import ConfigError
from tests.conftest import assert_clean_failure, run_cli


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16"), ((10, 0), "bf16")],
)
def test_auto_on_gpus_is_fp16_below_ampere_and_bf16_from_it(capability, expected):
    """V100 (7.0) and T4 (7.5) get fp16 + GradScaler even though torch would emulate bf16 on them."""
    assert resolve_amp("auto", "cuda", capability) == expected


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "fma"}, "fp32"),  # AVX2-only EPYC: bf16 is emulated, 13x slower per step
        ({"avx2", "avx512f", "avx512_vnni"}, "fp32"),  # VNNI is int8, not bf16
        ({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}, "bf16"),  # Zen 4/5, Cooper Lake
        ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, "bf16"),  # Sapphire Rapids and later
        (set(), "fp32"),
    ],
)
def test_auto_on_cpus_is_bf16_only_where_native(flags, expected):
    assert resolve_amp("auto", "cpu", cpu_flags=flags) == expected


def test_an_explicit_precision_is_kept():
    assert resolve_amp("fp32", "cuda", (9, 0)) == "fp32"
    assert resolve_amp("bf16", "cpu", cpu_flags={"avx2"}) == "bf16"


def test_profile_sections_are_the_library_settings():
    """The profile restates nothing: its training sections are the classes the CLI's flags come from."""
    from distilqa.pipelines.profile import Profile, load_profile

    types = {f.name: f.default_factory() for f in dataclasses.fields(Profile) if f.name not in ("name", "description")}
    assert type(types["teacher_finetune"]) is TrainConfig and type(types["prediction"]) is PredictionConfig
    assert type(types["general"]) is GeneralConfig
    for name in ("smoke", "cpu", "production"):
        profile = load_profile(name)
        assert profile.teacher_finetune.amp == profile.intermediate.amp == profile.prediction.amp == "auto", name
        assert profile.prediction.teacher_precision == "fp32", name


def test_every_setting_is_a_flag_with_its_default_and_help():
    help_text = run_cli("distill", "--help").stdout
    for cls in (TrainConfig, PredictionConfig):
        for f in dataclasses.fields(cls):
            assert f"--{f.name.replace('_', '-')}" in help_text, f.name
            assert f.metadata["help"].split()[0] in help_text, f.name
    assert "(default 3e-05)" in help_text and "--no-group-by-length" in help_text


def test_a_job_round_trips_through_its_file(tmp_path):
    job = StageJob(
        "prediction",
        "train.json",
        str(tmp_path / "out"),
        PredictionConfig(lr=1e-4, amp="fp16", teacher_precision="bf16"),
        teacher="t",
        student="s",
        checkpoint_dir="s3://bucket/run/prediction",
    )
    assert StageJob.read(job.write(tmp_path / "job.yaml")) == job
    assert set(STAGE_SETTINGS) == {"finetune", "general", "intermediate", "teacher_logits", "prediction"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("stage: [", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("stage: distill\ntrain_data: x\noutput_dir: o", "stage must be one of"),
        ("stage: finetune\ntrain_data: x\noutput_dir: o", "stage finetune needs model"),
        ("stage: finetune\ntrain_data: x\noutput_dir: o\nmodel: m\ntrain: {lr: fast}", "train.lr must be a number"),
        ("stage: finetune\ntrain_data: x\noutput_dir: o\nmodel: m\ntrain: {temperature: 2}", "unknown key"),
        ("stage: finetune\ntrain_data: x\noutput_dir: o\nmodel: m\nwindow: {doc_stride: 999}", "doc_stride"),
        ("stage: prediction\ntrain_data: x\noutput_dir: o\nteacher: t", "needs student"),
    ],
)
def test_bad_job_files_stop_before_any_process_starts(tmp_path, text, fragment):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    assert_clean_failure(run_cli("train", str(path)), fragment)


def test_bad_launch_settings_are_refused(tmp_path):
    path = StageJob("finetune", "x.json", str(tmp_path / "o"), model="m").write(tmp_path / "job.yaml")
    assert_clean_failure(run_cli("train", str(path), "--nnodes", "2"), "master_addr")
    assert_clean_failure(run_cli("train", str(path), "--nproc-per-node", "-1"), "nproc_per_node")
    assert_clean_failure(run_cli("train", str(tmp_path / "missing.yaml")), "no such file")


def test_out_of_range_settings_name_the_setting():
    with pytest.raises(ConfigError, match="teacher_precision"):
        PredictionConfig(teacher_precision="int8")
    with pytest.raises(ConfigError, match="max_sequences"):
        GeneralConfig(max_sequences=-1)


def test_a_checkpoint_exists_only_once_committed(tmp_path):
    store = CheckpointStore(str(tmp_path))
    for step in (10, 20, 30):
        store.write(step, "state.pt", b"x")
        store.write_meta(step, {"step": step})
    store.write(40, "state.pt", b"half written")  # killed before its meta.json: not a checkpoint
    assert store.committed_steps() == [10, 20, 30]
    store.prune(keep=2)
    assert store.committed_steps() == [20, 30] and store.all_steps() == [20, 30, 40]
    store.write_meta(40, {"step": 40})
    store.prune(keep=2)
    assert store.all_steps() == [30, 40]


def test_the_cli_writes_the_job_it_would_run(tmp_path):
    """--write-job: the validated job, to run later on every node (`distilqa train` or torchrun)."""
    path = tmp_path / "job.yaml"
    args = ["distill", "--stage", "prediction", "--teacher", "t/", "--student", "s/", "train.json", "-o", "out/"]
    result = run_cli(*args, "--lr", "1e-4", "--teacher-precision", "bf16", "--write-job", str(path))
    assert result.returncode == 0, result.stderr
    job = StageJob.read(path)
    assert (job.stage, job.train.lr, job.train.teacher_precision, job.teacher) == ("prediction", 1e-4, "bf16", "t/")
    assert not (tmp_path / "out").exists()
    assert_clean_failure(run_cli(*args, "--warmup-ratio", "1.5", "--write-job", str(tmp_path / "bad.yaml")), "warmup")
    assert not (tmp_path / "bad.yaml").exists()
