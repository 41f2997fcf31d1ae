"""evaluate: official SQuAD 2.0 metric on the dev split, plus single-question latency (p50/p95).

The predictions are written too: the deploy step's probe demands that the served endpoint gives
exactly these answers.
"""

from typing import NamedTuple

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def run_evaluate(
    model_dir: str, dev_path: str, window: dict, gate: dict, deploy: dict, eval_path: str, predictions_path: str
) -> dict:
    import json
    import statistics
    import time

    from distilqa.pipelines.profile import build_section

    from distilqa.decode import DecodeConfig
    from distilqa.features import FeatureTable, build_features
    from distilqa.inference import QAModel, parallel_batch
    from distilqa.metric import evaluate
    from distilqa.progress import progress_bar
    from distilqa.squad import load_squad
    from distilqa.storage import cache_dir

    w, g, d = build_section("window", window), build_section("gate", gate), build_section("deploy", deploy)
    dataset = load_squad(dev_path)
    examples = dataset.examples()
    model = QAModel.load(model_dir, d.precision)
    batch = parallel_batch()  # the thread layout of `distilqa predict` and of the server: the same answers
    # the dev windows as a memory-mapped table with offsets (tokenized once per data and tokenizer version),
    # answered as `distilqa predict` answers the same file
    table = FeatureTable(build_features(dataset, model.tokenizer, w, cache_dir() / "features", offsets=True)[0])
    t0 = time.perf_counter()
    answers = model.answer_table(examples, table, w, DecodeConfig(), batch, progress=progress_bar("evaluate", "window"))
    seconds = time.perf_counter() - t0
    preds = {e.id: a.text for e, a in zip(examples, answers, strict=True)}
    result = evaluate(dataset, preds)
    latencies = []
    for example in [examples[0], *examples[: g.latency_questions]]:  # the first call warms up
        t = time.perf_counter()
        model.answer([example], w, DecodeConfig())
        latencies.append((time.perf_counter() - t) * 1000)
    latencies = sorted(latencies[1:])
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
    result["latency_p50_ms"] = round(statistics.median(latencies), 2)
    result["latency_p95_ms"] = round(p95, 2)
    result["questions_per_s"] = round(len(examples) / seconds, 2)
    with open(eval_path, "w") as f:
        json.dump(result, f, indent=2)
    with open(predictions_path, "w") as f:
        json.dump(preds, f, ensure_ascii=False, indent=1)
    return result


@component(base_image=BASE_IMAGE)
def evaluate_op(
    model: dsl.Input[dsl.Model],
    dev: dsl.Input[dsl.Dataset],
    window: dict,
    gate: dict,
    deploy: dict,
    metrics: dsl.Output[dsl.Metrics],
    evaluation: dsl.Output[dsl.Artifact],
    predictions: dsl.Output[dsl.Artifact],
) -> NamedTuple("Outputs", f1=float, exact=float, p95_ms=float):
    from distilqa.components import failing_step

    with failing_step("evaluate"):
        from collections import namedtuple

        from distilqa.components.evaluate import run_evaluate

        r = run_evaluate(model.path, dev.path, window, gate, deploy, evaluation.path, predictions.path)
        for key, value in r.items():
            if isinstance(value, int | float):
                metrics.log_metric(key, float(value))
        return namedtuple("Outputs", ["f1", "exact", "p95_ms"])(r["f1"], r["exact"], r["latency_p95_ms"])
