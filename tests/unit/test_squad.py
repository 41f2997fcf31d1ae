"""The SQuAD data layer: the bundled dev set, validation, repairs, and errors that name the problem."""

from __future__ import annotations

import copy
import gzip
import json

import pytest

from distilqa.errors import DataError
from distilqa.squad import DEFAULT_DEV_SET, load_squad, parse_squad, write_squad
from tests.conftest import CONFORMANCE, assert_clean_failure, run_cli


def tiny(context="Normandy is a region in France. France is big.", **qa_overrides) -> dict:
    qa = {"id": "q1", "question": "Where is Normandy?", "answers": [{"text": "France", "answer_start": 24}]}
    qa.update(qa_overrides)
    return {"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{"context": context, "qas": [qa]}]}]}


def test_bundled_dev_set_counts(dev_set):
    assert len(dev_set.articles) == 35
    assert sum(len(a.paragraphs) for a in dev_set.articles) == 1204
    has = dev_set.has_answer()
    assert len(has) == dev_set.num_questions == 11873
    assert sum(has.values()) == 5928 and sum(not v for v in has.values()) == 5945
    for _, p, qa in dev_set.iter_questions():
        for a in qa.answers:
            assert p.context[a.answer_start : a.answer_end] == a.text


def test_plain_and_gzip_load_the_same(tmp_path, dev_set):
    plain = tmp_path / "dev.json"
    plain.write_bytes(gzip.decompress(DEFAULT_DEV_SET.read_bytes()))
    assert load_squad(plain).to_json() == dev_set.to_json()


def test_write_then_read_round_trip(tmp_path, dev_set):
    for name in ("out.json", "out.json.gz"):
        write_squad(dev_set, tmp_path / name)
        assert load_squad(tmp_path / name).to_json() == dev_set.to_json()
    assert (tmp_path / "out.json.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_answer_start_repaired_when_text_occurs_once():
    ds = parse_squad(tiny(answers=[{"text": "region", "answer_start": 3}]), "x.json")
    answer = ds.articles[0].paragraphs[0].qas[0].answers[0]
    assert answer.answer_start == 14
    assert ds.repairs and "q1" in ds.repairs[0] and "3 -> 14" in ds.repairs[0]


def test_missing_answer_start_is_filled_when_unambiguous():
    ds = parse_squad(tiny(answers=[{"text": "region"}]), "x.json")
    assert ds.articles[0].paragraphs[0].qas[0].answers[0].answer_start == 14


def test_correct_answer_start_for_repeated_text_is_kept():
    ds = parse_squad(tiny(answers=[{"text": "France", "answer_start": 32}]), "x.json")
    assert ds.articles[0].paragraphs[0].qas[0].answers[0].answer_start == 32
    assert not ds.repairs


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=3),
            ["q1", "occurs 2 times", "ambiguous"],
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(text="Germany"),
            ["q1", "does not occur"],
        ),
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].pop("id"), ["question 0", "'id'"]),
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(question=""), ["q1", "'question'"]),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(answers=[{"answer_start": 0}]),
            ["q1", "answer 'text'"],
        ),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(answers="France"),
            ["q1", "'answers' must be a list"],
        ),
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="24"), ["q1", "integer"]),
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(is_impossible=True), ["q1", "is_impossible is true"]),
        (lambda d: d["data"][0]["paragraphs"][0].pop("context"), ['article 0 "Normans", paragraph 0', "'context'"]),
        (lambda d: d["data"][0]["paragraphs"][0].update(context="   "), ["paragraph 0", "empty context"]),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"].append(
                copy.deepcopy(d["data"][0]["paragraphs"][0]["qas"][0])
            ),
            ["q1", "duplicate id"],
        ),
        (lambda d: d["data"].append("not an article"), ["article 1", "expected an object"]),
        (lambda d: d.update(data={}), ["'data' list"]),
    ],
)
def test_bad_files_name_the_problem(mutate, fragments):
    data = tiny()
    mutate(data)
    with pytest.raises(DataError) as info:
        parse_squad(data, "bad.json")
    message = str(info.value)
    assert message.startswith("bad.json")
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_every_problem_is_counted_and_the_first_ones_listed():
    data = tiny()
    qas = data["data"][0]["paragraphs"][0]["qas"]
    for n in range(30):
        qas.append({"id": f"bad{n}", "question": "?", "answers": [{"text": "Germany", "answer_start": 0}]})
    with pytest.raises(DataError) as info:
        parse_squad(data, "bad.json")
    message = str(info.value)
    assert "30 problem(s)" in message and "bad0" in message and "and 10 more" in message


def test_cli_rejects_a_malformed_data_file(tmp_path):
    data = tiny(answers=[{"text": "Germany", "answer_start": 0}])
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    pred = tmp_path / "pred.json"
    pred.write_text('{"q1": "France"}')
    assert_clean_failure(run_cli("eval", str(path), str(pred)), "broken.json", "Normans", "q1", "does not occur")


def test_cli_rejects_a_corrupt_gzip(tmp_path):
    path = tmp_path / "dev.json.gz"
    path.write_bytes(DEFAULT_DEV_SET.read_bytes()[:5000])
    pred = tmp_path / "pred.json"
    pred.write_text("{}")
    assert_clean_failure(run_cli("eval", str(path), str(pred)), "dev.json.gz", "gzip")


def test_writing_to_a_device_or_pipe_writes_through_and_keeps_it(tmp_path):
    """`-o /dev/null` must not rename a temporary file over the device (as root it replaced /dev/null)."""
    import os
    import stat
    import threading

    from distilqa.storage import write_bytes

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_bytes(fifo, b'{"exact": 1}')
    reader.join(timeout=10)
    assert received == [b'{"exact": 1}']
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not (tmp_path / "pipe.partial").exists()
    assert (
        run_cli(
            "eval", str(DEFAULT_DEV_SET), str(CONFORMANCE / "bert-single.predictions.json"), "-o", "/dev/null"
        ).returncode
        == 0
    )
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
