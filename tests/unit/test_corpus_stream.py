"""S1's streamed corpus: four shard formats, local or S3, split across ranks, resumable at the exact
token, and bad shards named with their line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from distilqa.corpus import CorpusStream, corpus_fingerprint, corpus_shards, read_documents
from distilqa.errors import DataError
from tests.conftest import assert_clean_failure, run_cli, write_shard

WIDTH = 32


@pytest.fixture(scope="module")
def documents(contexts) -> list[str]:
    return [c.replace("\n", " ") for c in contexts[:80]]


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory, documents) -> Path:
    """Four shards, one of each format, 20 documents each (and a file that is not a shard)."""
    root = tmp_path_factory.mktemp("corpus")
    for k, name in enumerate(("a.txt", "b.txt.gz", "c.jsonl", "sub/d.jsonl.zst")):
        (root / name).parent.mkdir(exist_ok=True)
        write_shard(root / name, documents[20 * k : 20 * (k + 1)])
    (root / "README.md").write_text("not a shard")
    return root


def all_rows(stream: CorpusStream, epoch: int = 0, n: int = 1) -> list[list[int]]:
    rows = []
    while True:
        try:
            rows.extend(stream.rows(epoch, n)["input_ids"].tolist())
        except DataError:
            return rows


def packed_by_hand(tokenizer, documents: list[str]) -> list[list[int]]:
    """The packing rule written out: documents joined by SEP, cut into CLS + 30 tokens + SEP."""
    flat: list[int] = []
    for d in documents:
        flat += tokenizer(d.strip(), add_special_tokens=False)["input_ids"] + [tokenizer.sep_token_id]
    body = WIDTH - 2
    return [
        [tokenizer.cls_token_id, *flat[i : i + body], tokenizer.sep_token_id]
        for i in range(0, len(flat) - body + 1, body)
    ]


def test_four_formats_read_as_one_packed_stream(mixed_corpus, documents, bpe_tokenizer):
    shards = corpus_shards(mixed_corpus)
    assert [s.name for s in shards] == ["a.txt", "b.txt.gz", "c.jsonl", "sub/d.jsonl.zst"]
    assert [d for s in shards for d in read_documents(s)] == [d.strip() for d in documents]
    stream = CorpusStream(shards, bpe_tokenizer, WIDTH)
    rows = all_rows(stream, n=3)
    expected = packed_by_hand(bpe_tokenizer, documents)
    assert rows == expected[: len(rows)] and len(expected) - len(rows) < 3  # only a last partial batch dropped
    assert stream.count(0) == len(expected) and stream.count(7) == 7
    batch = CorpusStream(shards, bpe_tokenizer, WIDTH).rows(0, 4)
    assert batch["input_ids"].shape == (4, WIDTH) and bool(batch["attention_mask"].all())
    assert "token_type_ids" not in batch  # RoBERTa's tokenizer has none


def test_a_corpus_on_s3_streams_as_it_does_locally(mixed_corpus, bpe_tokenizer, s3_env):
    from distilqa.storage import s3_client

    client = s3_client()
    client.create_bucket(Bucket="pile")
    for path in mixed_corpus.rglob("*"):
        if path.is_file():
            client.put_object(Bucket="pile", Key=f"shards/{path.relative_to(mixed_corpus)}", Body=path.read_bytes())
    local, remote = corpus_shards(mixed_corpus), corpus_shards("s3://pile/shards/")
    assert corpus_fingerprint(local) == corpus_fingerprint(remote)
    assert all_rows(CorpusStream(remote, bpe_tokenizer, WIDTH)) == all_rows(CorpusStream(local, bpe_tokenizer, WIDTH))
    (one,) = corpus_shards("s3://pile/shards/sub/d.jsonl.zst")
    assert one.name == "d.jsonl.zst" and list(read_documents(one)) == list(read_documents(local[3]))
    with pytest.raises(DataError, match="no such object"):
        corpus_shards("s3://pile/shards/missing.txt")
    with pytest.raises(DataError, match="no .txt"):
        corpus_shards("s3://pile/elsewhere/")


def test_ranks_read_their_own_shards_and_together_the_whole_corpus(mixed_corpus, bpe_tokenizer, tmp_path, documents):
    shards = corpus_shards(mixed_corpus)
    per_rank = [[d["text"] for d in CorpusStream(shards, bpe_tokenizer, WIDTH, r, 2).dataset] for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(d.strip() for d in documents)
    # four shards over two ranks: whole shards each (a.txt and c.jsonl to rank 0)
    assert per_rank[0][:20] == [d.strip() for d in documents[:20]]
    # three shards over two ranks: every rank reads all, keeping every other document
    odd = shards[:3]
    halves = [[d["text"] for d in CorpusStream(odd, bpe_tokenizer, WIDTH, r, 2).dataset] for r in range(2)]
    every = [d.strip() for d in documents[:60]]
    assert halves == [every[0::2], every[1::2]]


@pytest.mark.parametrize("world", [1, 2])
def test_a_stream_resumes_at_the_exact_token(mixed_corpus, bpe_tokenizer, world):
    shards = corpus_shards(mixed_corpus)
    for rank in range(world):
        straight = CorpusStream(shards, bpe_tokenizer, WIDTH, rank, world)
        first = straight.rows(0, 5)["input_ids"]
        saved = json.loads(json.dumps(straight.state()))  # what a checkpoint holds survives serialisation
        assert saved["consumed"] == 5 and saved["carry"], "the cut is mid-document: tokens are carried over"
        rest = all_rows(straight)
        resumed = CorpusStream(shards, bpe_tokenizer, WIDTH, rank, world)
        resumed.load_state(saved)
        assert all_rows(resumed) == rest and len(rest) > 10
        # a later epoch starts its shards again
        assert torch.equal(resumed.rows(1, 5)["input_ids"], first)


def test_state_crosses_shard_boundaries(mixed_corpus, bpe_tokenizer):
    shards = corpus_shards(mixed_corpus)
    total = len(all_rows(CorpusStream(shards, bpe_tokenizer, WIDTH)))
    for cut in (1, total // 4, total // 2, total - 2):
        a = CorpusStream(shards, bpe_tokenizer, WIDTH)
        a.rows(0, cut)
        b = CorpusStream(shards, bpe_tokenizer, WIDTH)
        b.load_state(a.state())
        assert all_rows(b) == all_rows(a), cut


BAD = {
    "junk.txt": (b"a fine line\n\x00\x00\x00\rIHDR\x89\n", "junk.txt line 2: binary data"),
    "png.txt": (b"a fine line\n\x89PNG\r\n\x1a\n", "png.txt line 2: not UTF-8"),
    "latin.txt": ("first\nsecond\ncaf\xe9 au lait\n".encode("latin-1"), "latin.txt line 3: not UTF-8"),
    "empty.txt": (b"", "empty.txt: empty (0 bytes)"),
    "blank.txt.gz": (gzip.compress(b"\n  \n\n"), "blank.txt.gz: no documents in 3 line(s)"),
    "broken.jsonl": (b'{"text": "ok"}\n{"text": "cut\n', "broken.jsonl line 2: not valid JSON"),
    "fields.jsonl": (
        b'{"text": "ok"}\n\n{"body": "no text field"}\n',
        'fields.jsonl line 3: expected a JSON object with a "text"',
    ),
    "notgz.txt.gz": (b"plain text, not gzip\n", "notgz.txt.gz line 1: not a valid gzip stream"),
    "cut.txt.gz": (gzip.compress(b"one\ntwo\n" * 5000)[:-40], "cut.txt.gz line"),
    "notzst.jsonl.zst": (b'{"text": "x"}\n', "notzst.jsonl.zst line 1: not a valid zstd stream"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_shard_is_named_with_its_line(tmp_path, name, bpe_tokenizer):
    raw, message = BAD[name]
    (tmp_path / name).write_bytes(raw)
    with pytest.raises(DataError) as caught:
        list(read_documents(corpus_shards(tmp_path / name)[0]))
    assert message in str(caught.value)
    # inside the datasets stream the message arrives unchanged
    with pytest.raises(DataError, match=message.split(":")[0]):
        CorpusStream(corpus_shards(tmp_path), bpe_tokenizer, WIDTH).count(0)


def test_a_bad_shard_stops_s1_before_anything_is_written(tmp_path, mixed_corpus, contexts, tiny_roberta_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in sorted(mixed_corpus.glob("*.*")):
        if path.name != "README.md":
            (corpus / path.name).write_bytes(path.read_bytes())
    (corpus / "e.jsonl").write_bytes(b'{"text": "fine"}\n' * 50 + b'{"text": broken}\n')
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run_cli(
        "distill",
        "--stage",
        "general",
        "--teacher",
        str(tiny_roberta_dir),
        str(corpus),
        "-o",
        str(out),
        "--student-layers",
        "1",
        "--max-seq-len",
        "64",
        "--checkpoint-every",
        "1",
        env={"DISTILQA_CACHE": str(cache)},
    )
    assert_clean_failure(result, "e.jsonl line 51: not valid JSON")
    assert not out.exists() and not cache.exists()


def test_a_file_that_is_not_line_oriented_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    import distilqa.corpus as corpus

    monkeypatch.setattr(corpus, "MAX_LINE", 1000)
    (tmp_path / "blob.txt").write_bytes(b"first line\n" + b"x" * 5000)
    with pytest.raises(DataError, match="blob.txt line 2: longer than 1,000 bytes; not line-oriented text"):
        list(read_documents(corpus_shards(tmp_path / "blob.txt")[0]))
