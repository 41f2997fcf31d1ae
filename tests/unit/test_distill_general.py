"""S1 general distillation, student construction and the pre-softmax attention target."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from distilqa.distill.attention_scores import return_attention_scores
from distilqa.distill.losses import IntermediateDistiller, LayerMap
from distilqa.distill.student import StudentSpec, build_student, kept_teacher_layers
from distilqa.errors import ConfigError
from tests.conftest import assert_clean_failure, run_cli


def _bert(layers: int = 4, width: int = 32, heads: int = 4, seed: int = 0):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * width,
        max_position_embeddings=64,
    )
    return BertForQuestionAnswering(config).eval()


IDS = torch.randint(5, 100, (3, 12), generator=torch.Generator().manual_seed(0))
MASK = torch.tensor([[1] * 12, [1] * 8 + [0] * 4, [1] * 5 + [0] * 7])


def test_scores_are_the_pre_softmax_logits_and_the_forward_is_unchanged():
    import copy

    eager = _bert()
    eager.set_attn_implementation("eager")
    scores = copy.deepcopy(eager)
    return_attention_scores(scores)
    e = eager(input_ids=IDS, attention_mask=MASK, output_attentions=True)
    s = scores(input_ids=IDS, attention_mask=MASK, output_attentions=True)
    assert torch.allclose(e.start_logits, s.start_logits, atol=1e-6)
    for probs, raw in zip(e.attentions, s.attentions, strict=True):
        masked = raw.masked_fill(MASK[:, None, None, :] == 0, float("-inf"))
        assert torch.allclose(masked.softmax(-1), probs, atol=1e-6)
        assert not torch.allclose(raw, probs)  # really scores, not probabilities
    # scores of a copy are exactly equal: the intermediate loss is exactly 0 for a copy
    twin = copy.deepcopy(scores)
    t = twin(input_ids=IDS, attention_mask=MASK, output_attentions=True, output_hidden_states=True)
    s = scores(input_ids=IDS, attention_mask=MASK, output_attentions=True, output_hidden_states=True)
    terms = IntermediateDistiller(LayerMap(4, 4), 32, 32)(
        s.hidden_states, t.hidden_states, s.attentions, t.attentions, MASK
    )
    assert terms["attention"].item() == 0.0 and terms["total"].item() == 0.0


def test_scores_see_what_probabilities_hide():
    # two score maps a softmax cannot tell apart (a constant shift per row) differ as scores
    from distilqa.distill.losses import attention_mse

    a = torch.randn(1, 2, 4, 4)
    b = a + 3.0
    assert attention_mse(a.softmax(-1), b.softmax(-1)).item() < 1e-12
    assert attention_mse(a, b).item() == pytest.approx(9.0)


def test_teacher_layers_student_keeps_every_kth_layer_and_the_embeddings():
    teacher = _bert(layers=4)
    student = build_student(teacher, StudentSpec(2))
    assert kept_teacher_layers(4, 2) == [2, 4] and kept_teacher_layers(12, 6) == [2, 4, 6, 8, 10, 12]
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    t, s = teacher.state_dict(), student.state_dict()
    for m, k in enumerate([2, 4]):
        for name, value in s.items():
            if name.startswith(f"bert.encoder.layer.{m}."):
                assert torch.equal(value, t[name.replace(f"layer.{m}.", f"layer.{k - 1}.", 1)])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["qa_outputs.weight"], t["qa_outputs.weight"])
    # a full-depth student is the teacher
    same = build_student(teacher, StudentSpec(4))
    assert torch.equal(same(input_ids=IDS).start_logits, teacher(input_ids=IDS).start_logits)
    # the teacher is untouched
    assert len(teacher.bert.encoder.layer) == 4


def test_random_student_takes_the_given_shape():
    student = build_student(_bert(), StudentSpec(2, "random", hidden_size=16, intermediate_size=24, attention_heads=2))
    c = student.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads) == (2, 16, 24, 2)
    assert student.bert.embeddings.word_embeddings.weight.shape == (100, 16)


@pytest.mark.parametrize(
    "spec, message",
    [
        (lambda: StudentSpec(3), "multiple"),
        (lambda: StudentSpec(2, hidden_size=16), "keeps the teacher's widths"),
        (lambda: StudentSpec(2, "random", hidden_size=30, attention_heads=4), "multiple of"),
        (lambda: StudentSpec(0), "positive"),
        (lambda: StudentSpec(2, "copy"), "teacher-layers or random"),
    ],
)
def test_impossible_students_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_student(_bert(), spec())


# --------------------------------------------------------------------------------- S1 from the CLI


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, bpe_tokenizer_dir):
    from distilqa.local_models import random_model

    return random_model(
        bpe_tokenizer_dir,
        tmp_path_factory.mktemp("s1") / "teacher",
        "mlm",
        num_layers=4,
        hidden_size=64,
        num_heads=4,
        seed=2,
    )


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, contexts):
    root = tmp_path_factory.mktemp("corpus")
    (root / "shard-000.txt").write_text("\n".join(contexts[:60]) + "\n\n")
    (root / "shard-001.txt.gz").write_bytes(gzip.compress("\n".join(contexts[60:120]).encode()))
    (root / "README.md").write_text("not a shard")
    return root


TRAIN = ["--epochs", "2", "--batch-size", "8", "--per-device-batch-size", "4", "--lr", "1e-3", "--max-seq-len", "64"]


def s1(teacher, corpus, out, *extra):
    return run_cli(
        "distill",
        "--stage",
        "general",
        "--teacher",
        str(teacher),
        str(corpus),
        "-o",
        str(out),
        *TRAIN,
        "--student-layers",
        "2",
        *extra,
    )


@pytest.mark.parametrize("init", ["teacher-layers", "random"])
def test_general_distillation_trains_a_student_on_plain_text(teacher_dir, corpus_dir, tmp_path, init):
    result = s1(teacher_dir, corpus_dir, tmp_path / "s", "--student-layers", "2", "--student-init", init)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "s" / "training_record.json").read_text())
    assert record["stage"] == "general" and record["student_init"] == init
    assert record["attention_target"] == "scores" and record["layer_map"] == {"0": 0, "1": 2, "2": 4}
    assert record["train_data_checksum"].startswith("sha256:") and record["sequences"] > 8
    r = record["result"]
    assert r["last_step_loss"] < r["first_step_loss"], r
    assert {"hidden", "attention"} <= set(r["mean_terms_this_run"])
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    # the S1 output is a backbone S2a can start from
    from distilqa.model_io import load_pretrained

    _, model = load_pretrained(tmp_path / "s", "AutoModelForQuestionAnswering")
    assert model.config.num_hidden_layers == 2


def test_general_distillation_reads_a_corpus_from_s3(teacher_dir, corpus_dir, tmp_path, s3_server):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="corpus")
    for f in sorted(corpus_dir.iterdir()):
        s3.put_object(Bucket="corpus", Key=f"pile/{f.name}", Body=f.read_bytes())
    env = {**s3_server, "DISTILQA_CACHE": str(tmp_path / "cache")}
    local = s1(teacher_dir, corpus_dir, tmp_path / "local", "--student-layers", "2", "--epochs", "1")
    remote = run_cli(
        "distill",
        "--stage",
        "general",
        "--teacher",
        str(teacher_dir),
        "s3://corpus/pile",
        "-o",
        str(tmp_path / "remote"),
        *TRAIN,
        "--student-layers",
        "2",
        "--epochs",
        "1",
        env=env,
    )
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr[-2000:]
    a = json.loads((tmp_path / "local" / "training_record.json").read_text())
    b = json.loads((tmp_path / "remote" / "training_record.json").read_text())
    assert a["train_data_checksum"] == b["train_data_checksum"] and a["sequences"] == b["sequences"]
    assert not (tmp_path / "cache").exists()  # streamed from S3: nothing downloaded
    assert a["result"]["last_step_loss"] == pytest.approx(b["result"]["last_step_loss"], rel=1e-5)


def test_bad_corpora_and_options_fail_clearly(teacher_dir, corpus_dir, tmp_path):
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    (tmp_path / "empty").mkdir()
    (tmp_path / "tiny.txt").write_text("one short line\n")
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip")
    assert_clean_failure(s1(teacher_dir, tmp_path / "missing.txt", tmp_path / "o"), "no such corpus")
    assert_clean_failure(s1(teacher_dir, tmp_path / "doc.pdf", tmp_path / "o"), ".txt")
    assert_clean_failure(s1(teacher_dir, tmp_path / "empty", tmp_path / "o"), "no .txt")
    assert_clean_failure(s1(teacher_dir, tmp_path / "tiny.txt", tmp_path / "o"), "fewer than")
    assert_clean_failure(s1(teacher_dir, tmp_path / "bad.txt.gz", tmp_path / "o"), "gzip")
    assert_clean_failure(s1(teacher_dir, corpus_dir, tmp_path / "o", "--student-layers", "3"), "multiple")
    assert_clean_failure(s1(teacher_dir, corpus_dir, tmp_path / "o", "--max-sequences", "-1"), "max_sequences")
    assert not (tmp_path / "o").exists()


def test_make_student_cli(tmp_path, tiny_roberta_dir):
    result = run_cli("make-student", str(tiny_roberta_dir), "-o", str(tmp_path / "s"), "--layers", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s" / "config.json").read_text())["num_hidden_layers"] == 1
    assert (tmp_path / "s" / "tokenizer.json").exists()
    assert_clean_failure(
        run_cli("make-student", str(tiny_roberta_dir), "-o", str(tmp_path / "x"), "--layers", "3"), "multiple"
    )


def test_training_benchmark_runs_every_stage(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench", "train", "--batch-size", "1", "--seq-len", "16", "--steps", "1", "--amp", "fp32", "--output", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["stage"] for r in rows] == ["s2a", "s2b", "logits"]
    assert all(r["samples_per_s"] > 0 and 0 < r["mfu_vs_measured_peak"] < 1.5 for r in rows)
    assert rows[2]["features"] == 1 and 4 <= rows[2]["mean_length"] <= 16
    assert rows[0]["model_tflops"] / rows[0]["samples_per_s"] > rows[1]["model_tflops"] / rows[1]["samples_per_s"]
    assert_clean_failure(run_cli("bench", "train", "--seq-len", "4096"), "--seq-len")
