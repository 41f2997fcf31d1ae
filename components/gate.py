"""gate: register only a model that is good enough, not worse than the champion, and fast enough.

passed = F1 >= min_f1 AND F1 >= champion F1 - tolerance (when a champion exists) AND p95 <= budget.
The decision and a model card (the seed's format) go to KFP (Markdown) and to the MLflow pipeline run.
"""

from typing import NamedTuple

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def decide(f1: float, p95_ms: float, champion: float | None, gate: dict) -> tuple[bool, str]:
    from distilqa.pipelines.profile import build_section

    g = build_section("gate", gate)
    reasons = []
    if f1 < g.min_f1:
        reasons.append(f"F1 {f1:.2f} < min_f1 {g.min_f1:.2f}")
    if champion is not None and f1 < champion - g.champion_tolerance:
        reasons.append(f"F1 {f1:.2f} < champion F1 {champion:.2f} - tolerance {g.champion_tolerance:.2f}")
    if p95_ms > g.p95_latency_ms:
        reasons.append(f"p95 latency {p95_ms:.1f} ms > budget {g.p95_latency_ms:.1f} ms")
    if reasons:
        return False, "; ".join(reasons)
    versus = f"champion F1 {champion:.2f}" if champion is not None else "no champion yet"
    return True, f"F1 {f1:.2f} >= {g.min_f1:.2f}, {versus}, p95 {p95_ms:.1f} ms <= {g.p95_latency_ms:.1f} ms"


def model_card(name: str, evaluation: dict, passed: bool, reason: str, provenance: dict) -> str:
    e = evaluation
    row = lambda k: f"{e[k]:.2f}" if k in e else "n/a"  # noqa: E731
    lines = [
        f"# {name}",
        "",
        f"**Gate: {'PASSED' if passed else 'FAILED'}** — {reason}",
        "",
        "## Performance (SQuAD 2.0 official evaluation, untuned no-answer threshold)",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| exact | {row('exact')} |",
        f"| f1 | {row('f1')} |",
        f"| total | {e.get('total', 'n/a')} |",
        f"| HasAns_exact | {row('HasAns_exact')} |",
        f"| HasAns_f1 | {row('HasAns_f1')} |",
        f"| HasAns_total | {e.get('HasAns_total', 'n/a')} |",
        f"| NoAns_exact | {row('NoAns_exact')} |",
        f"| NoAns_f1 | {row('NoAns_f1')} |",
        f"| NoAns_total | {e.get('NoAns_total', 'n/a')} |",
        f"| latency p50 / p95 (ms, 1 question) | {row('latency_p50_ms')} / {row('latency_p95_ms')} |",
        f"| questions/s (batched) | {row('questions_per_s')} |",
        "",
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | `{v}` |" for k, v in provenance.items()],
        "",
    ]
    return "\n".join(lines)


def provenance(models: dict, train_checksum: str, dev_checksum: str, kfp_run_id: str) -> dict:
    from distilqa.distill.provenance import code_version

    return {
        "intermediate_teacher": models.get("intermediate_teacher", ""),
        "prediction_teacher": models.get("prediction_teacher", ""),
        "general_teacher": models.get("general_teacher", "") or "(skipped: student backbone given)",
        "student_backbone": models.get("student_backbone", ""),
        "train_data_checksum": train_checksum,
        "dev_data_checksum": dev_checksum,
        "code_version": code_version(),
        "kfp_run_id": kfp_run_id,
    }


def run_gate(
    f1: float,
    p95_ms: float,
    eval_path: str,
    gate: dict,
    registry: dict,
    tracking: dict,
    provenance: dict,
    report_path: str,
) -> tuple[bool, str]:
    import json

    from distilqa.pipelines.profile import build_section

    r = build_section("registry", registry)
    champion = None
    uri = tracking.get("uri", "")
    if uri:
        from distilqa.registry import champion_f1, client

        champion = champion_f1(client(uri), r.model_name)
    passed, reason = decide(f1, p95_ms, champion, gate)
    evaluation = json.loads(open(eval_path).read())
    card = model_card(r.model_name, evaluation, passed, reason, provenance)
    with open(report_path, "w") as f:
        f.write(card)
    if uri and tracking.get("parent_run_id"):
        import mlflow

        mlflow.set_tracking_uri(uri)
        c = mlflow.MlflowClient(uri)
        run_id = tracking["parent_run_id"]
        c.log_text(run_id, card, "gate/model_card.md")
        c.log_dict(run_id, evaluation, "gate/official_eval.json")
        c.log_dict(run_id, {"passed": passed, "reason": reason, "champion_f1": champion}, "gate/decision.json")
        c.set_tag(run_id, "gate.passed", str(passed).lower())
        c.set_tag(run_id, "gate.reason", reason)
        for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "latency_p95_ms"):
            if key in evaluation:
                c.log_metric(run_id, key, float(evaluation[key]))
    return passed, reason


@component(base_image=BASE_IMAGE)
def gate_op(
    f1: float,
    p95_ms: float,
    evaluation: dsl.Input[dsl.Artifact],
    gate: dict,
    registry: dict,
    tracking: dict,
    models: dict,
    train_checksum: str,
    dev_checksum: str,
    report: dsl.Output[dsl.Markdown],
) -> NamedTuple("Outputs", passed=bool, decision=str, reason=str):
    from distilqa.components import failing_step, kfp_run_id

    with failing_step("gate"):
        from collections import namedtuple

        from distilqa.components.gate import provenance, run_gate

        facts = provenance(models, train_checksum, dev_checksum, kfp_run_id())
        passed, reason = run_gate(f1, p95_ms, evaluation.path, gate, registry, tracking, facts, report.path)
        print(f"gate: {'passed' if passed else 'FAILED'}: {reason}")
        # `decision` ("passed"/"failed") is what dsl.If compares: string conditions behave the same in
        # kfp.local and in a cluster, boolean outputs did not under kfp.local 2.17
        return namedtuple("Outputs", ["passed", "decision", "reason"])(passed, "passed" if passed else "failed", reason)
