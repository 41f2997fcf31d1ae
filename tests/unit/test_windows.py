"""Windows (features) for any fast tokenizer: both stride conventions, question truncation, labels."""

from __future__ import annotations

import pytest

from distilqa.errors import ConfigError, ModelError
from distilqa.windows import WindowConfig, Windower, token_span, window_starts

TOKENIZERS = ["bpe_tokenizer", "wordpiece_tokenizer"]


def _questions(dev_set, n=120):
    out = []
    for _, p, qa in dev_set.iter_questions():
        out.append((qa, p.context))
        if len(out) == n:
            break
    return out


def _trim(text: str, begin: int, end: int) -> tuple[int, int]:
    while begin < end and text[begin].isspace():
        begin += 1
    return begin, end


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@pytest.mark.parametrize("stride", [16, 50])
def test_overlap_mode_equals_transformers_overflow(request, dev_set, tok_name, stride):
    """With stride_mode='overlap', windows are exactly the tokenizer's own return_overflowing_tokens windows."""
    tok = request.getfixturevalue(tok_name)
    config = WindowConfig(max_seq_len=96, doc_stride=stride, stride_mode="overlap", max_query_length=64)
    pairs = _questions(dev_set)
    questions = [qa.question for qa, _ in pairs]
    contexts = [c for _, c in pairs]
    features = Windower(tok, config).features(questions, contexts)
    ref = tok(
        [q.lstrip() for q in questions],
        contexts,
        truncation="only_second",
        max_length=96,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    assert len(features) == len(ref["input_ids"])
    assert len(features) > len(pairs)  # some contexts needed several windows
    for i, f in enumerate(features):
        assert f.example_index == ref["overflow_to_sample_mapping"][i]
        assert f.input_ids == ref["input_ids"][i]
        seq = ref.sequence_ids(i)
        ctx = [j for j, s in enumerate(seq) if s == 1]
        assert f.context_start == ctx[0] and f.context_end == ctx[-1]
        # transformers leaves the leading space in the first offset of an overflow window ((230, 238)
        # for " Normans"); ours is trimmed ((231, 238)). Same token, same ids; compare trimmed spans.
        context = contexts[f.example_index]
        assert f.offsets == [_trim(context, *ref["offset_mapping"][i][j]) for j in ctx]
        if f.token_type_ids is not None:
            assert f.token_type_ids == ref["token_type_ids"][i]


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_step_mode_moves_by_doc_stride_and_covers_the_context(request, dev_set, tok_name):
    tok = request.getfixturevalue(tok_name)
    config = WindowConfig(max_seq_len=64, doc_stride=20, stride_mode="step", max_query_length=16)
    pairs = _questions(dev_set, 40)
    windower = Windower(tok, config)
    features = windower.features([qa.question for qa, _ in pairs], [c for _, c in pairs])
    by_example: dict[int, list] = {}
    for f in features:
        by_example.setdefault(f.example_index, []).append(f)
    multi = 0
    for i, (_, context) in enumerate(pairs):
        fs = by_example[i]
        ctx_offsets = [
            tuple(o) for o in tok(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        ]
        starts = [ctx_offsets.index(f.offsets[0]) for f in fs]
        assert starts == [20 * k for k in range(len(fs))]
        assert fs[-1].offsets[-1] == ctx_offsets[-1]  # the last window reaches the end
        assert all(len(f.input_ids) <= 64 for f in fs)
        multi += len(fs) > 1
    assert multi > 10


def test_window_starts_conventions():
    step = WindowConfig(max_seq_len=384, doc_stride=128, stride_mode="step")
    overlap = WindowConfig(max_seq_len=384, doc_stride=128, stride_mode="overlap")
    assert window_starts(600, 316, step) == [0, 128, 256, 384]
    assert window_starts(600, 316, overlap) == [0, 188, 376]
    assert window_starts(316, 316, step) == [0]
    assert window_starts(0, 316, step) == [0]
    assert window_starts(
        100, 10, WindowConfig(max_seq_len=64, doc_stride=50, stride_mode="step", max_query_length=8)
    ) == list(range(0, 91, 10))


def test_questions_are_cut_to_max_query_length(bpe_tokenizer):
    question = "Which " + "very " * 80 + "long question is this?"
    config = WindowConfig(max_seq_len=128, doc_stride=32, max_query_length=12)
    (feature,) = Windower(bpe_tokenizer, config).features([question], ["A short context."])
    full = bpe_tokenizer(question, add_special_tokens=False)["input_ids"]
    assert feature.input_ids[1:13] == full[:12]
    assert feature.context_start == 1 + 12 + 2  # <s> q </s></s>


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_labels_point_at_the_answer_or_cls(request, dev_set, tok_name):
    tok = request.getfixturevalue(tok_name)
    config = WindowConfig(max_seq_len=64, doc_stride=24, stride_mode="step", max_query_length=24)
    pairs = _questions(dev_set, 200)
    answers = [(qa.answers[0].answer_start, qa.answers[0].answer_end) if qa.answers else None for qa, _ in pairs]
    windower = Windower(tok, config)
    features = windower.features([qa.question for qa, _ in pairs], [c for _, c in pairs], answers)
    cls = windower.template.cls_index
    labelled = outside = 0
    for f in features:
        qa, context = pairs[f.example_index]
        if not qa.answers:
            assert (f.start_position, f.end_position) == (cls, cls)
            continue
        a = qa.answers[0]
        inside = f.offsets[0][0] <= a.answer_start and a.answer_end <= f.offsets[-1][1]
        if not inside:
            assert (f.start_position, f.end_position) == (cls, cls)
            outside += 1
            continue
        labelled += 1
        begin, end = f.char_span(f.start_position, f.end_position)
        assert begin <= a.answer_start and a.answer_end <= end  # the token span covers the answer ...
        assert context[begin:end].strip().lower().find(a.text.lower().strip()) >= 0
        # ... and is the smallest that does
        assert (
            f.offsets[f.start_position - f.context_start + 1][0] > a.answer_start or f.start_position == f.end_position
        )
    assert labelled > 50 and outside > 10


def test_token_span():
    offsets = [(0, 3), (4, 9), (9, 10), (11, 15)]
    assert token_span(offsets, 4, 10) == (1, 2)
    assert token_span(offsets, 5, 8) == (1, 1)
    assert token_span(offsets, 0, 15) == (0, 3)
    assert token_span(offsets, 16, 18) is None
    assert token_span([], 0, 1) is None


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"doc_stride": -1}, "doc_stride"),
        ({"max_seq_len": 128, "doc_stride": 128}, "doc_stride (128) must be smaller"),
        ({"max_seq_len": 64, "max_query_length": 64}, "max_query_length"),
        ({"stride_mode": "sideways"}, "stride_mode"),
        ({"max_query_length": 2.5}, "max_query_length"),
    ],
)
def test_config_validation(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        WindowConfig(**kwargs)


def test_no_room_for_context(bpe_tokenizer):
    with pytest.raises(ConfigError, match="leaves no room"):
        Windower(bpe_tokenizer, WindowConfig(max_seq_len=20, doc_stride=4, max_query_length=16))


def test_slow_tokenizer_is_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ModelError, match="not a fast"):
        Windower(Slow(), WindowConfig())
