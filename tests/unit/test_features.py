"""SQuAD features as an Arrow table (distilqa.features): the same batches as the in-memory tensors they
replace, built once per data version, never half-written, and shared by the ranks of a node."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distilqa.windows import WindowConfig

WINDOW = WindowConfig(128, 64)


@pytest.mark.parametrize("tokenizer_dir", ["tiny_roberta_dir", "tiny_bert_dir"])
def test_arrow_batches_equal_the_in_memory_batches(request, tokenizer_dir, dev_slice_file, tmp_path):
    """Same token ids, labels and padding for any batch, and the same length-grouped order for a seed."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from distilqa.distill.config import TrainConfig
    from distilqa.distill.finetune import qa_tensors, trim_padding
    from distilqa.distill.trainer import TensorData, Trainer
    from distilqa.features import FeatureTable, build_features
    from distilqa.squad import load_squad

    model_dir = request.getfixturevalue(tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = load_squad(dev_slice_file)
    path, built = build_features(dataset, tokenizer, WINDOW, tmp_path / "cache", num_proc=2)
    table, tensors = FeatureTable(path), qa_tensors(dataset, tokenizer, WINDOW)
    assert built and len(table) == len(tensors["input_ids"]) > dataset.num_questions  # long contexts: 2+ windows
    assert torch.equal(torch.as_tensor(table.lengths()), TensorData(tensors).lengths())
    generator = torch.Generator().manual_seed(7)
    for size in (1, 8, 33):
        indices = torch.randperm(len(table), generator=generator)[:size]
        got, want = table.batch(indices), trim_padding({k: v[indices] for k, v in tensors.items()})
        assert got.keys() == want.keys()
        for name in want:
            assert torch.equal(got[name], want[name]), name
    config = TrainConfig(epochs=1, batch_size=16, per_device_batch_size=8, group_by_length=True)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    orders = [
        Trainer(model, data, lambda m, b: {}, config, tmp_path / "out")._epoch_order(0) for data in (table, tensors)
    ]
    assert torch.equal(*orders)


def test_the_cache_is_built_once_per_data_version_and_never_half_written(
    tiny_roberta_dir, dev_slice_file, tmp_path, monkeypatch
):
    from transformers import AutoTokenizer

    import distilqa.features as features
    from distilqa.squad import DEFAULT_DEV_SET, load_squad

    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    dataset = load_squad(dev_slice_file)
    cache = tmp_path / "cache"
    path, built = features.build_features(dataset, tokenizer, WINDOW, cache)
    assert built and features.build_features(dataset, tokenizer, WINDOW, cache) == (path, False)
    other, built = features.build_features(dataset, tokenizer, WindowConfig(128, 32), cache)  # another version
    assert built and other != path
    fewer, built = features.build_features(dataset.first_questions(20), tokenizer, WINDOW, cache)
    assert built and fewer not in (path, other)

    calls = []

    def failing(batch, indices, tokenizer, window, offsets):
        calls.append(len(indices))
        if len(calls) > 1:
            raise RuntimeError("killed mid-build")
        return real(batch, indices, tokenizer, window, offsets)

    real = features._tokenize
    monkeypatch.setattr(features, "_tokenize", failing)
    bigger = load_squad(DEFAULT_DEV_SET).first_questions(1200)  # three map batches: the second one fails
    with pytest.raises(RuntimeError, match="killed mid-build"):
        features.build_features(bigger, tokenizer, WINDOW, cache)
    assert len(calls) == 2
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in (path, other, fewer))  # no leftovers


def test_a_cache_on_s3_is_tokenized_once_for_every_pod(tiny_roberta_dir, dev_slice_file, tmp_path, s3_env, monkeypatch):
    """A pipeline's features_root: the first pod builds and publishes, a later pod (an empty local cache)
    downloads the same table; a prefix without its index (a publisher killed midway) is built again."""
    from transformers import AutoTokenizer

    from distilqa.features import INDEX, FeatureTable, build_features
    from distilqa.squad import load_squad
    from distilqa.storage import s3_client

    client = s3_client()
    client.create_bucket(Bucket="root")
    tokenizer, dataset = AutoTokenizer.from_pretrained(tiny_roberta_dir), load_squad(dev_slice_file)

    def pod(name: str) -> tuple[FeatureTable, bool]:
        monkeypatch.setenv("DISTILQA_CACHE", str(tmp_path / name))
        path, built = build_features(dataset, tokenizer, WINDOW, "s3://root/features/")
        assert path.parent == tmp_path / name / "features"
        return FeatureTable(path), built

    def published() -> list[str]:
        return sorted(o["Key"] for o in client.list_objects_v2(Bucket="root").get("Contents", []))

    first, built = pod("pod-1")
    assert built
    keys = published()
    assert f"features/{first.key}/{INDEX}" in keys and any(k.endswith(".arrow") for k in keys)
    second, built = pod("pod-2")
    assert not built and second.key == first.key and len(second) == len(first)
    rows = list(range(0, len(first), 7))
    assert all(torch.equal(a, b) for a, b in zip(first.batch(rows).values(), second.batch(rows).values(), strict=True))

    client.delete_object(Bucket="root", Key=f"features/{first.key}/{INDEX}")
    third, built = pod("pod-3")
    assert built and published() == keys

    (tmp_path / "pod-3" / "features" / first.key / INDEX).write_text('{"key": "x", "format": 2}')
    from distilqa.errors import DataError

    with pytest.raises(DataError, match=f"{INDEX}: not a feature-cache index .no field 'files'.; delete"):
        FeatureTable(tmp_path / "pod-3" / "features" / first.key)
    (tmp_path / "pod-3" / "features" / first.key / INDEX).write_text("{truncated")
    with pytest.raises(DataError, match="not a feature-cache index"):
        FeatureTable(tmp_path / "pod-3" / "features" / first.key)


@pytest.mark.parametrize("model_dir", ["tiny_roberta_dir", "tiny_bert_dir"])
def test_evaluation_reads_the_table_and_answers_as_predict_does(request, model_dir, dev_slice_file, tmp_path):
    from distilqa.errors import DataError
    from distilqa.features import FeatureTable, build_features
    from distilqa.inference import QAModel, parallel_batch
    from distilqa.squad import load_squad

    model = QAModel.load(request.getfixturevalue(model_dir))
    dataset = load_squad(dev_slice_file)
    examples = dataset.examples()
    path, built = build_features(dataset, model.tokenizer, WINDOW, tmp_path, num_proc=2, offsets=True)
    table = FeatureTable(path)
    assert built and path.name.startswith("eval-features-") and table.has_offsets
    predicted = model.answer(examples, WINDOW, batch=parallel_batch())
    from_table = model.answer_table(examples, table, WINDOW, batch=parallel_batch())
    assert [(a.text, a.na_prob) for a in from_table] == [(a.text, a.na_prob) for a in predicted]
    assert sum(bool(a.text) for a in predicted) > 10
    # a block at a time: the same windows (the table's carry labels too), fewer in memory
    windows = model.windower(WINDOW).features([e.question for e in examples], [e.context for e in examples])

    def unlabelled(features):
        return [dataclasses.replace(f, start_position=0, end_position=0) for f in features]

    assert unlabelled(table.windows(table.feature_rows(0, len(examples)))) == windows
    assert unlabelled(table.windows(table.feature_rows(5, 9), 5)) == [
        dataclasses.replace(f, example_index=f.example_index - 5) for f in windows if 5 <= f.example_index < 9
    ]
    blocks = model.answer_table(examples, table, WINDOW, batch=parallel_batch(), block=7)
    assert [a.text for a in blocks] == [a.text for a in predicted]
    training, _ = build_features(dataset, model.tokenizer, WINDOW, tmp_path)
    with pytest.raises(DataError, match="without the offsets"):
        FeatureTable(training).windows(range(0, 3))


RANK = """
import json, os, sys, time
import distilqa.features as features
from distilqa.squad import load_squad
from transformers import AutoTokenizer

real = features.build_features
def recorded(*args, **kwargs):
    open(os.path.join(sys.argv[3], "built-by-" + os.environ["RANK"]), "w").close()
    time.sleep(1.0)  # a slow build: the other rank must wait for it, not read half of it
    return real(*args, **kwargs)
features.build_features = recorded
table = features.shared_features(
    load_squad(sys.argv[1]), AutoTokenizer.from_pretrained(sys.argv[2]), features.WindowConfig(128, 64), sys.argv[3]
)
batch = table.batch(list(range(4)))
print(json.dumps({"rank": os.environ["RANK"], "key": table.key, "rows": len(table), "ids": batch["input_ids"].tolist()}))
"""


def test_two_ranks_under_torchrun_open_one_cache(tiny_roberta_dir, dev_slice_file, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    cache = tmp_path / "cache"
    cache.mkdir()
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*torchrun, str(script), str(dev_slice_file), str(tiny_roberta_dir), str(cache)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in ranks) == ["0", "1"]
    assert ranks[0]["key"] == ranks[1]["key"] and ranks[0]["rows"] == ranks[1]["rows"] > 0
    assert ranks[0]["ids"] == ranks[1]["ids"]
    built = sorted(p.name for p in cache.iterdir() if p.name.startswith("built-by-"))
    assert built == ["built-by-0"]  # one tokenization for the node
    assert [p.name for p in cache.iterdir() if p.name.startswith("features-")] == [ranks[0]["key"]]


def test_bench_data_measures_both_paths_on_the_same_features(tiny_roberta_dir, tmp_path):
    from tests.conftest import assert_clean_failure, run_cli

    assert_clean_failure(run_cli("bench", "data", "--repeat", "0"), "--repeat")
    assert_clean_failure(run_cli("bench", "data", "--paths", "open"), "give build too")
    assert_clean_failure(run_cli("bench", "data", "--paths", "memory,disk"), "--paths takes")
    out = tmp_path / "bench.json"
    args = ["--repeat", "1", "--num-proc", "1", "--tokenizer", str(tiny_roberta_dir), "--work-dir", str(tmp_path)]
    done = run_cli("bench", "data", *args, "--output", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    memory, build, opened = (report["results"][m] for m in ("memory", "build", "open"))
    assert memory["features"] == build["features"] == opened["features"] > memory["questions"] > 10000
    assert opened["cache_bytes_per_feature"] > 0 and "| Arrow: open |" in done.stdout
    stream = report["results"]["stream"]
    assert stream["documents"] > 1000 and stream["sequences"] > 500 and "S1 stream" in done.stdout
    assert not (tmp_path / "feature-cache").exists() and not (tmp_path / "corpus").exists()  # cleaned up
