"""Augmentation keeps answers, ids, case and spacing; is deterministic; shards add up; sources work."""

from __future__ import annotations

import json
import re

import pytest

from distilqa.augment.augment import GROUP_SIZE, ID_SUFFIX, AugmentConfig, Shard, augment_dataset, merge_shards
from distilqa.augment.sources import EmbeddingSource, GloveSource, MLMSource
from distilqa.augment.words import STOP_WORDS, match_case, scan_words
from distilqa.errors import ConfigError, DataError
from distilqa.squad import Article, SquadDataset, load_squad, write_squad
from tests.conftest import assert_clean_failure, run_cli

WORD = re.compile(r"[^\W\d_]+")


@pytest.fixture(scope="module")
def wp_mlm_dir(tmp_path_factory, wordpiece_tokenizer_dir):
    from distilqa.local_models import random_mlm_model

    return random_mlm_model(wordpiece_tokenizer_dir, tmp_path_factory.mktemp("wp-mlm"), num_layers=2, hidden_size=64)


@pytest.fixture(scope="module")
def bpe_mlm_dir(tmp_path_factory, bpe_tokenizer_dir):
    from distilqa.local_models import random_mlm_model

    return random_mlm_model(bpe_tokenizer_dir, tmp_path_factory.mktemp("bpe-mlm"), num_layers=2, hidden_size=64)


@pytest.fixture(scope="module")
def small_set(dev_set) -> SquadDataset:
    """More than three GROUP_SIZE groups of paragraphs, answerable and unanswerable questions."""
    articles, n = [], 0
    for a in dev_set.articles:
        take = a.paragraphs[:12]
        articles.append(Article(a.title, take))
        n += len(take)
        if n > 3 * GROUP_SIZE + 5:
            break
    return SquadDataset(articles, source="small")


@pytest.fixture(scope="module")
def glove_file(tmp_path_factory, contexts):
    """A GloVe-format file: random-but-clustered vectors for the dev words, then a corrupt tail."""
    import random

    rng = random.Random(0)
    words = list(dict.fromkeys(w.lower() for c in contexts[:200] for w in WORD.findall(c) if len(w) > 1))
    path = tmp_path_factory.mktemp("glove") / "glove.txt"
    with open(path, "w") as f:
        for w in words:
            base = (ord(w[0]) - 97) / 26.0  # words sharing a first letter are neighbours
            f.write(w + " " + " ".join(f"{base + rng.gauss(0, 0.05):.4f}" for _ in range(8)) + "\n")
        f.write("this line is not a vector\n")
    return path, words


def all_checks(original: SquadDataset, augmented: SquadDataset, factor: int) -> None:
    """Every invariant the issue asks for, on any output."""
    ids = [qa.id for _, _, qa in augmented.iter_questions()]
    assert len(ids) == len(set(ids)), "question ids are not unique"
    originals = {qa.id: (p, qa) for _, p, qa in original.iter_questions()}
    assert augmented.num_questions == original.num_questions * (factor + 1)
    for _, p, qa in augmented.iter_questions():
        base_id, _, k = qa.id.partition(ID_SUFFIX)
        orig_p, orig_qa = originals[base_id]
        assert qa.question == orig_qa.question
        assert qa.is_impossible == orig_qa.is_impossible
        assert [a.text for a in qa.answers] == [a.text for a in orig_qa.answers]
        assert [a.text for a in qa.plausible_answers] == [a.text for a in orig_qa.plausible_answers]
        for a in (*qa.answers, *qa.plausible_answers):
            assert p.context[a.answer_start : a.answer_end] == a.text  # exact, no repair needed
        if not k:
            assert p.context == orig_p.context  # the original is kept as it was
            continue
        # spacing, punctuation and digits are untouched; only whole words change
        assert WORD.split(p.context) == WORD.split(orig_p.context)
        protected = [(a.answer_start, a.answer_end) for q in orig_p.qas for a in (*q.answers, *q.plausible_answers)]
        for m_old, m_new in zip(WORD.finditer(orig_p.context), WORD.finditer(p.context), strict=True):
            if m_old.group() != m_new.group():
                assert m_old.group().lower() not in STOP_WORDS
                assert not any(s < m_old.end() and m_old.start() < e for s, e in protected)
                if m_old.group()[0].isupper():
                    assert m_new.group()[0].isupper()


@pytest.mark.parametrize("mlm", ["wp_mlm_dir", "bpe_mlm_dir"])
def test_mlm_source_output_keeps_every_invariant(request, mlm, small_set):
    source = MLMSource(request.getfixturevalue(mlm), masks_per_copy=4, batch_size=16)
    out, stats = augment_dataset(small_set, AugmentConfig(factor=2, replace_prob=0.5, candidates=5), source)
    all_checks(small_set, out, 2)
    assert stats.replacements_by_source["mlm"] > 100
    assert stats.replacements_by_source["embeddings"] > 0  # words of several pieces fall back
    assert stats.words_total == (
        stats.words_replaceable
        + stats.words_skipped_stop_words
        + stats.words_skipped_in_answers
        + stats.words_skipped_too_short
    )


def test_embeddings_source(small_set, bpe_mlm_dir):
    source = EmbeddingSource(bpe_mlm_dir)
    out, stats = augment_dataset(small_set, AugmentConfig(factor=3, replace_prob=0.4, candidates=7), source)
    all_checks(small_set, out, 3)
    assert set(stats.replacements_by_source) == {"embeddings"}
    word = next(iter(source.cache))
    assert 0 < len(source.cache[word]) <= 7 and word not in [c.lower() for c in source.cache[word]]


def test_glove_source_streams_only_the_first_words(small_set, glove_file):
    path, words = glove_file
    source = GloveSource(path, vocab_size=len(words) // 2)  # the corrupt last line is never read
    assert len(source.words) <= len(words) // 2
    out, stats = augment_dataset(small_set, AugmentConfig(factor=2, replace_prob=1.0, candidates=3), source)
    all_checks(small_set, out, 2)
    assert stats.replacements_by_source["glove"] > 100
    known = {w.lower() for w in source.words}
    neighbours = source.cache["between"] if "between" in source.cache else next(v for v in source.cache.values() if v)
    assert all(n.lower() in known for n in neighbours)
    with pytest.raises(DataError, match="line"):
        GloveSource(path, vocab_size=10**6)  # reading everything reaches the corrupt line


def test_probability_zero_copies_contexts_and_one_replaces_everything(small_set, glove_file):
    source = GloveSource(glove_file[0], vocab_size=len(glove_file[1]))
    out0, stats0 = augment_dataset(small_set, AugmentConfig(factor=1, replace_prob=0.0), source)
    assert sum(stats0.replacements_by_source.values()) == 0
    assert [p.context for a in out0.articles for p in a.paragraphs][1::2] == [
        p.context for a in small_set.articles for p in a.paragraphs
    ]
    _, stats1 = augment_dataset(small_set, AugmentConfig(factor=1, replace_prob=1.0), source)
    with_candidates = stats1.words_replaceable - stats1.words_without_candidates
    assert sum(stats1.replacements_by_source.values()) == with_candidates


def test_deterministic_and_seed_dependent(small_set, wp_mlm_dir):
    source = MLMSource(wp_mlm_dir, masks_per_copy=4)
    config = AugmentConfig(factor=2, seed=7)
    a, _ = augment_dataset(small_set, config, source)
    b, _ = augment_dataset(small_set, config, MLMSource(wp_mlm_dir, masks_per_copy=4))
    c, _ = augment_dataset(small_set, AugmentConfig(factor=2, seed=8), source)
    assert a.to_json() == b.to_json()
    assert a.to_json() != c.to_json()


@pytest.mark.parametrize("n", [2, 3])
def test_shards_concatenated_equal_the_unsharded_output(small_set, bpe_mlm_dir, n):
    config = AugmentConfig(factor=2, replace_prob=0.5, candidates=5)
    whole, _ = augment_dataset(small_set, config, MLMSource(bpe_mlm_dir))
    parts = [augment_dataset(small_set, config, MLMSource(bpe_mlm_dir), Shard(i, n))[0] for i in range(1, n + 1)]
    assert all(p.num_questions for p in parts)
    assert merge_shards(parts).to_json() == whole.to_json()


def test_cli_shards_and_merge(tmp_path, small_set, glove_file):
    data = tmp_path / "in.json"
    write_squad(small_set, data)
    common = ["--glove", str(glove_file[0]), "--glove-vocab", "500", "--factor", "2"]
    whole = run_cli("augment", str(data), str(tmp_path / "whole.json.gz"), *common)
    assert whole.returncode == 0, whole.stderr
    for i in (1, 2):
        r = run_cli("augment", str(data), str(tmp_path / f"s{i}.json"), *common, "--shard", f"{i}/2")
        assert r.returncode == 0, r.stderr
    merged = run_cli(
        "augment-merge", str(tmp_path / "merged.json"), str(tmp_path / "s1.json"), str(tmp_path / "s2.json")
    )
    assert merged.returncode == 0, merged.stderr
    assert load_squad(tmp_path / "merged.json").to_json() == load_squad(tmp_path / "whole.json.gz").to_json()
    stats = json.loads((tmp_path / "whole.stats.json").read_text())
    assert stats["paragraphs_out"] == 3 * stats["paragraphs_in"] and stats["source"] == "glove"
    assert stats["replacements_by_source"]["glove"] > 0 and stats["seconds_total"] > 0


def test_words_and_case():
    scan = scan_words("The Normans, in 911, gave Normandy its name.", [(16, 19)])
    assert [w.text for w in scan.replaceable] == ["Normans", "gave", "Normandy", "name"]
    assert scan.stop_words == 3 and scan.in_answers == 0 and scan.total == 7
    scan = scan_words("The Normans gave Normandy its name.", [(4, 11)])
    assert [w.text for w in scan.replaceable] == ["gave", "Normandy", "name"] and scan.in_answers == 1
    assert match_case("paris", "London") == "Paris"
    assert match_case("paris", "NATO") == "PARIS"
    assert match_case("Paris", "city") == "Paris"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--factor", "-1"], "factor"),
        (["--replace-prob", "1.5"], "replace_prob"),
        (["--candidates", "0"], "candidates"),
        (["--shard", "3/2"], "shard"),
        (["--shard", "half"], "i/n"),
    ],
)
def test_cli_rejects_bad_parameters(tmp_path, glove_file, args, fragment):
    out = tmp_path / "out.json"
    result = run_cli("augment", "-", str(out), "--glove", str(glove_file[0]), *args)
    assert_clean_failure(result, fragment)
    assert not out.exists()


def test_cli_rejects_bad_inputs(tmp_path, glove_file):
    out = str(tmp_path / "out.json")
    assert_clean_failure(
        run_cli("augment", str(tmp_path / "in.json"), out, "--glove", str(glove_file[0])), "no such file"
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "", "qas": []}]}]}))
    assert_clean_failure(run_cli("augment", str(bad), out, "--glove", str(glove_file[0])), "empty context")
    bad.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "title": "T",
                        "paragraphs": [
                            {
                                "context": "A b c.",
                                "qas": [{"id": "x", "question": "q?", "answers": [{"text": "zzz", "answer_start": 0}]}],
                            }
                        ],
                    }
                ]
            }
        )
    )
    assert_clean_failure(run_cli("augment", str(bad), out, "--glove", str(glove_file[0])), "x", "does not occur")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "Alpha beta gamma.", "qas": []}]}]}))
    assert_clean_failure(run_cli("augment", str(good), out), "candidate source")
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("word 1.0 2.0\nother 1.0\n")
    assert_clean_failure(run_cli("augment", str(good), out, "--glove", str(garbage)), "garbage.txt", "line 2")
    assert_clean_failure(run_cli("augment", str(good), out, "--mlm-model", str(tmp_path)), "config.json")


def test_shard_ranges_cover_everything_once():
    for paragraphs in (0, 1, 31, 32, 33, 100, 1000):
        for n in (1, 2, 3, 7):
            ranges = [Shard(i, n).paragraph_range(paragraphs) for i in range(1, n + 1)]
            assert [i for r in ranges for i in r] == list(range(paragraphs))
            assert all(r.start % GROUP_SIZE == 0 for r in ranges if len(r))
    with pytest.raises(ConfigError):
        Shard.parse("0/3")
