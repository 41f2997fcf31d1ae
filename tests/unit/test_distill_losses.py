"""Distillation losses against hand-computed values, and their failure modes."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from distilqa.distill.losses import (
    IntermediateDistiller,
    LayerMap,
    attention_mse,
    check_same_tokenizer,
    prediction_layer_loss,
)
from distilqa.errors import ConfigError


def _softmax(z):
    m = max(z)
    e = [math.exp(x - m) for x in z]
    return [x / sum(e) for x in e]


def _by_hand(s_start, s_end, t_start, t_end, gold_start, gold_end, T, w):
    def kl(s, t):
        ps, pt = _softmax([x / T for x in s]), _softmax([x / T for x in t])
        return sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps, strict=True))

    def ce(s, gold):
        return -math.log(_softmax(s)[gold])

    return (
        w * T * T * (kl(s_start, t_start) + kl(s_end, t_end))
        + (1 - w) * (ce(s_start, gold_start) + ce(s_end, gold_end)) / 2
    )


def _loss(s_start, s_end, t_start, t_end, gs, ge, T, w, mask=None):
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    return prediction_layer_loss(
        student_start_logits=t(s_start),
        student_end_logits=t(s_end),
        teacher_start_logits=t(t_start),
        teacher_end_logits=t(t_end),
        start_positions=torch.tensor(gs),
        end_positions=torch.tensor(ge),
        temperature=T,
        weight=w,
        attention_mask=mask,
    )


@pytest.mark.parametrize(("T", "w"), [(1.5, 0.75), (1.0, 0.5), (3.0, 0.1)])
def test_prediction_loss_equals_the_formula_by_hand(T, w):
    s_start, s_end = [1.0, 2.0, 0.5, -1.0], [0.0, 1.5, 2.5, 0.3]
    t_start, t_end = [3.0, 0.5, 1.0, 0.0], [-0.5, 0.2, 4.0, 1.0]
    got = _loss([s_start], [s_end], [t_start], [t_end], [1], [2], T, w)
    assert got.item() == pytest.approx(_by_hand(s_start, s_end, t_start, t_end, 1, 2, T, w), rel=1e-6)


def test_batch_is_the_mean_of_examples():
    a = ([[1.0, 2.0, 0.0]], [[0.0, 1.0, 3.0]], [[2.0, 0.0, 1.0]], [[1.0, 1.0, 0.0]], [0], [2])
    b = ([[0.5, -1.0, 2.0]], [[2.0, 0.0, 0.0]], [[0.0, 0.0, 3.0]], [[0.0, 2.0, 1.0]], [2], [1])
    both = tuple(x + y for x, y in zip(a, b, strict=True))
    la, lb, lab = (_loss(*x, 1.5, 0.75).item() for x in (a, b, both))
    assert lab == pytest.approx((la + lb) / 2, rel=1e-6)


def test_weight_extremes_and_the_soft_to_hard_ratio():
    args = ([[1.0, 2.0, 0.0]], [[0.0, 1.0, 3.0]], [[2.0, 0.0, 1.0]], [[1.0, 1.0, 0.0]], [0], [2])
    hard = _loss(*args, 1.5, 0.0).item()
    ce = torch.nn.functional.cross_entropy
    assert hard == pytest.approx(
        (ce(torch.tensor([[1.0, 2, 0]]), torch.tensor([0])) + ce(torch.tensor([[0.0, 1, 3]]), torch.tensor([2]))).item()
        / 2
    )
    soft = _loss(*args, 1.5, 1.0).item()
    assert _loss(*args, 1.5, 0.75).item() == pytest.approx(0.75 * soft + 0.25 * hard, rel=1e-6)
    assert (0.75 * 1.5**2) / (0.25 / 2) == pytest.approx(13.5)  # RECIPE: the soft term weighs ~13.5x


def test_identical_logits_leave_only_the_hard_term():
    z = [[0.3, 2.0, -1.0, 0.5]]
    assert _loss(z, z, z, z, [1], [3], 2.0, 0.6).item() == pytest.approx(
        _loss(z, z, z, z, [1], [3], 2.0, 0.0).item() * 0.4 / 1.0, rel=1e-6
    )


def test_padding_is_excluded_with_a_mask():
    base = ([[1.0, 2.0, 0.5]], [[0.0, 1.5, 2.5]], [[3.0, 0.5, 1.0]], [[-0.5, 0.2, 4.0]], [1], [2])
    padded = tuple([row + [9.0, -7.0] for row in x] if i < 4 else x for i, x in enumerate(base))
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    assert _loss(*padded, 1.5, 0.75, mask).item() == pytest.approx(_loss(*base, 1.5, 0.75).item(), rel=1e-6)
    assert _loss(*padded, 1.5, 0.75).item() != pytest.approx(_loss(*base, 1.5, 0.75).item(), rel=1e-3)


def test_prediction_loss_rejects_bad_arguments():
    z = [[0.0, 1.0]]
    with pytest.raises(ConfigError, match="temperature"):
        _loss(z, z, z, z, [0], [1], 0.0, 0.5)
    with pytest.raises(ConfigError, match="weight"):
        _loss(z, z, z, z, [0], [1], 1.0, 1.5)
    with pytest.raises(ConfigError, match="student's token ids"):
        _loss(z, z, [[0.0, 1.0, 2.0]], z, [0], [1], 1.0, 0.5)


def test_prediction_loss_gradients_flow_to_the_student_only():
    s = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
    t = torch.tensor([[3.0, 0.5, 1.0]], requires_grad=True)
    loss = prediction_layer_loss(
        student_start_logits=s,
        student_end_logits=s,
        teacher_start_logits=t,
        teacher_end_logits=t,
        start_positions=torch.tensor([1]),
        end_positions=torch.tensor([2]),
        temperature=1.5,
        weight=0.75,
    )
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is not None  # the caller detaches the teacher (no_grad); the loss itself is symmetric in autograd


# ------------------------------------------------------------------------------- intermediate


def _bert(layers: int, width: int, heads: int, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * width,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    return BertModel(config).eval()


def _run(model, ids, mask):
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    return out.hidden_states, out.attentions


def test_a_copy_of_the_teacher_has_zero_intermediate_loss():
    teacher = _bert(2, 32, 4)
    student = copy.deepcopy(teacher)
    ids, mask = torch.randint(5, 100, (3, 12)), torch.tensor([[1] * 12, [1] * 8 + [0] * 4, [1] * 5 + [0] * 7])
    distiller = IntermediateDistiller(LayerMap(2, 2), 32, 32)
    (sh, sa), (th, ta) = _run(student, ids, mask), _run(teacher, ids, mask)
    terms = distiller(sh, th, sa, ta, mask)
    assert terms["total"].item() == 0.0 and terms["hidden"].item() == 0.0 and terms["attention"].item() == 0.0
    oh, oa = _run(_bert(2, 32, 4, seed=1), ids, mask)  # a different student is penalised
    assert distiller(oh, th, oa, ta, mask)["total"].item() > 0


def test_projections_get_gradients_and_are_parameters():
    teacher, student = _bert(4, 64, 4), _bert(2, 32, 4, seed=3)
    ids, mask = torch.randint(5, 100, (2, 10)), torch.ones(2, 10, dtype=torch.long)
    distiller = IntermediateDistiller(LayerMap(2, 4), 32, 64)
    with torch.no_grad():
        th, ta = _run(teacher, ids, mask)
    sh, sa = _run(student.train(), ids, mask)
    distiller(sh, th, sa, ta, mask)["total"].backward()
    projections = list(distiller.projections)
    assert len(projections) == 3 and all(isinstance(p, torch.nn.Linear) for p in projections)
    assert all(p.weight.grad is not None and p.weight.grad.abs().sum() > 0 for p in projections)
    optimizer = torch.optim.AdamW(list(student.parameters()) + list(distiller.parameters()))
    registered = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p.weight) in registered for p in projections)


def test_layer_map():
    lm = LayerMap(6, 12)
    assert [lm.teacher_layer(m) for m in range(7)] == [0, 2, 4, 6, 8, 10, 12]
    with pytest.raises(ConfigError, match="multiple"):
        LayerMap(5, 12)


def test_head_counts_must_match_for_attention():
    with pytest.raises(ConfigError, match="head counts"):
        attention_mse(torch.zeros(1, 12, 4, 4), torch.zeros(1, 16, 4, 4))


def test_attention_mse_ignores_padded_pairs():
    a, b = torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    c = b.clone()
    c[..., 3] += 5.0
    c[..., 3, :] -= 3.0
    assert attention_mse(a, b, mask).item() == pytest.approx(attention_mse(a, c, mask).item())


def test_tokenizers_must_match(bpe_tokenizer, wordpiece_tokenizer):
    check_same_tokenizer(bpe_tokenizer, bpe_tokenizer)
    with pytest.raises(ConfigError, match="tokenizers differ"):
        check_same_tokenizer(bpe_tokenizer, wordpiece_tokenizer)
