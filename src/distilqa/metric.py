"""The official SQuAD 2.0 metric (evaluate-v2.0.py), reproduced number for number.

Evaluation, the pipeline's gate and the serving accuracy checks all score through this module, so
a number reported anywhere in distilqa is the leaderboard's number. Sums run in the same order as
the official script, so results agree to the last bit, not just to rounding. Pure Python: numpy and
matplotlib are imported only when plots are asked for.
"""

from __future__ import annotations

import math
import os
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from distilqa.errors import DataError
from distilqa.squad import SquadDataset, read_json

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    if not gold_toks or not pred_toks:
        # no-answer on either side: 1 when both are no-answer, else 0
        return int(gold_toks == pred_toks)
    num_same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def get_raw_scores(gold: Mapping[str, list[str]], preds: Mapping[str, str]) -> tuple[dict[str, int], dict[str, float]]:
    """Per-question EM and F1, each the max over the gold answers ("" for unanswerable)."""
    exact_scores: dict[str, int] = {}
    f1_scores: dict[str, float] = {}
    for qid, answers in gold.items():
        if qid not in preds:
            continue
        gold_answers = [a for a in answers if normalize_answer(a)] or [""]
        a_pred = preds[qid]
        exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def apply_no_ans_threshold(
    scores: Mapping[str, float], na_probs: Mapping[str, float], has_ans: Mapping[str, bool], thresh: float
) -> dict[str, float]:
    new_scores: dict[str, float] = {}
    for qid, s in scores.items():
        if na_probs[qid] > thresh:
            new_scores[qid] = float(not has_ans[qid])
        else:
            new_scores[qid] = s
    return new_scores


def make_eval_dict(
    exact_scores: Mapping[str, float], f1_scores: Mapping[str, float], qid_list: list[str] | None = None
) -> dict[str, Any]:
    if not qid_list:
        total = len(exact_scores)
        return {
            "exact": 100.0 * sum(exact_scores.values()) / total,
            "f1": 100.0 * sum(f1_scores.values()) / total,
            "total": total,
        }
    total = len(qid_list)
    return {
        "exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
        "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total,
        "total": total,
    }


def merge_eval(main_eval: dict[str, Any], new_eval: Mapping[str, Any], prefix: str) -> None:
    for k, v in new_eval.items():
        main_eval[f"{prefix}_{k}"] = v


def find_best_thresh(
    preds: Mapping[str, str],
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    has_ans: Mapping[str, bool],
) -> tuple[float, float]:
    """The score when answering "" above each na-prob threshold, maximised over thresholds."""
    num_no_ans = sum(1 for k in has_ans if not has_ans[k])
    cur_score: float = num_no_ans
    best_score: float = cur_score
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def make_precision_recall_eval(
    scores: Mapping[str, float],
    na_probs: Mapping[str, float],
    num_true_pos: int,
    has_ans: Mapping[str, bool],
    out_image: str | None = None,
    title: str | None = None,
) -> dict[str, float]:
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    true_pos = 0.0
    precisions = [1.0]
    recalls = [0.0]
    avg_prec = 0.0
    for i, qid in enumerate(qid_list):
        if has_ans[qid]:
            true_pos += scores[qid]
        cur_p = true_pos / float(i + 1)
        cur_r = true_pos / float(num_true_pos)
        if i == len(qid_list) - 1 or na_probs[qid] != na_probs[qid_list[i + 1]]:
            avg_prec += cur_p * (cur_r - recalls[-1])
            precisions.append(cur_p)
            recalls.append(cur_r)
    if out_image:
        _plot_pr_curve(precisions, recalls, out_image, title or "")
    return {"ap": 100.0 * avg_prec}


def evaluate(
    dataset: SquadDataset,
    preds: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    out_image_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The official evaluation: the same keys, in the same order, with the same values."""
    gold = dataset.gold_answers()
    has_ans = dataset.has_answer()
    _check_coverage(dataset.source, has_ans, preds, "predictions")
    given_na_probs = na_probs is not None
    if na_probs is None:
        na_probs = {k: 0.0 for k in preds}
    else:
        _check_coverage(dataset.source, has_ans, na_probs, "no-answer probabilities")
    has_ans_qids = [k for k, v in has_ans.items() if v]
    no_ans_qids = [k for k, v in has_ans.items() if not v]
    exact_raw, f1_raw = get_raw_scores(gold, preds)
    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, has_ans, na_prob_thresh)
    out_eval = make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, has_ans_qids), "HasAns")
    if no_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, no_ans_qids), "NoAns")
    if given_na_probs:
        best_exact, exact_t = find_best_thresh(preds, exact_raw, na_probs, has_ans)
        best_f1, f1_t = find_best_thresh(preds, f1_raw, na_probs, has_ans)
        out_eval["best_exact"] = best_exact
        out_eval["best_exact_thresh"] = exact_t
        out_eval["best_f1"] = best_f1
        out_eval["best_f1_thresh"] = f1_t
    if given_na_probs and out_image_dir:
        image_dir = os.fspath(out_image_dir)
        Path(image_dir).mkdir(parents=True, exist_ok=True)
        num_true_pos = len(has_ans_qids)
        if num_true_pos:
            curves = [
                ("pr_exact", exact_raw, "Precision-Recall curve for Exact Match score"),
                ("pr_f1", f1_raw, "Precision-Recall curve for F1 score"),
                (
                    "pr_oracle",
                    {k: float(v) for k, v in has_ans.items()},
                    "Oracle Precision-Recall curve (binary task of HasAns vs. NoAns)",
                ),
            ]
            for name, scores, title in curves:
                image = os.path.join(image_dir, f"{name}.png")
                pr = make_precision_recall_eval(scores, na_probs, num_true_pos, has_ans, image, title)
                merge_eval(out_eval, pr, name)
        _histogram_na_prob(na_probs, has_ans_qids, image_dir, "hasAns")
        _histogram_na_prob(na_probs, no_ans_qids, image_dir, "noAns")
    return out_eval


def load_predictions(uri: str | os.PathLike[str]) -> dict[str, str]:
    """A predictions file: a JSON object mapping question id -> answer text ("" = no answer)."""
    uri = os.fspath(uri)
    obj = read_json(uri)
    if not isinstance(obj, dict):
        raise DataError(
            f"{uri}: predictions must be a JSON object mapping question id to answer text, got a {type(obj).__name__}"
        )
    bad = [(k, v) for k, v in obj.items() if not isinstance(v, str)]
    if bad:
        qid, value = bad[0]
        raise DataError(
            f"{uri}: {len(bad)} prediction(s) are not strings; question {qid}: {type(value).__name__} {_short(value)}"
        )
    return obj


def load_na_probs(uri: str | os.PathLike[str]) -> dict[str, float]:
    """A no-answer probability file: a JSON object mapping question id -> number."""
    uri = os.fspath(uri)
    obj = read_json(uri)
    if not isinstance(obj, dict):
        raise DataError(f"{uri}: expected a JSON object mapping question id to a number, got a {type(obj).__name__}")
    out: dict[str, float] = {}
    for qid, value in obj.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DataError(
                f"{uri}: question {qid}: no-answer probability must be a finite number, got {_short(value)}"
            )
        out[qid] = value
    return out


def _check_coverage(source: str, has_ans: Mapping[str, bool], given: Iterable[str], what: str) -> None:
    given_set = set(given)
    missing = [qid for qid in has_ans if qid not in given_set]
    if missing:
        shown = ", ".join(missing[:5])
        raise DataError(
            f"{what} are missing for {len(missing)} of the {len(has_ans)} questions in {source} (first: {shown})"
        )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_pr_curve(precisions: list[float], recalls: list[float], out_image: str, title: str) -> None:
    plt = _pyplot()
    plt.step(recalls, precisions, color="b", alpha=0.2, where="post")
    plt.fill_between(recalls, precisions, step="post", alpha=0.2, color="b")
    plt.xlabel("Recall")
    plt.ylabel("Precision")
    plt.xlim([0.0, 1.05])
    plt.ylim([0.0, 1.05])
    plt.title(title)
    plt.savefig(out_image)
    plt.clf()


def _histogram_na_prob(na_probs: Mapping[str, float], qid_list: list[str], image_dir: str, name: str) -> None:
    if not qid_list:
        return
    plt = _pyplot()
    x = [na_probs[k] for k in qid_list]
    weights = [1.0 / len(x)] * len(x)
    plt.hist(x, weights=weights, bins=20, range=(0.0, 1.0))
    plt.xlabel("Model probability of no-answer")
    plt.ylabel("Proportion of dataset")
    plt.title(f"Histogram of no-answer probability: {name}")
    plt.savefig(os.path.join(image_dir, f"na_prob_hist_{name}.png"))
    plt.clf()
