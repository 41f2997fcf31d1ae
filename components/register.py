"""register: the gated model becomes a registered MLflow version (pyfunc over the serving code),
tagged with its provenance and metrics, alias `challenger`. Caching is off for this step."""

from typing import NamedTuple

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def run_register(
    model_dir: str,
    eval_path: str,
    report_path: str,
    window: dict,
    deploy: dict,
    registry: dict,
    tracking: dict,
    provenance: dict,
) -> str:
    import json
    from dataclasses import asdict

    from distilqa.pipelines.profile import build_section

    from distilqa.registry import client, register

    r, d = build_section("registry", registry), build_section("deploy", deploy)
    window = asdict(build_section("window", window))  # typed values (KFP hands JSON numbers back as floats)
    evaluation = json.loads(open(eval_path).read())
    tags = {
        **provenance,
        **{k: f"{evaluation[k]:.4f}" for k in ("exact", "f1", "HasAns_f1", "NoAns_f1") if k in evaluation},
    }
    tags["latency_p95_ms"] = str(evaluation.get("latency_p95_ms", ""))
    return register(
        client(tracking.get("uri", "")),
        r.model_name,
        model_dir,
        window,
        d.precision,
        tags,
        {"eval": eval_path, "card": report_path},
        tracking.get("parent_run_id", ""),
    )


@component(base_image=BASE_IMAGE)
def register_op(
    passed: bool,
    reason: str,
    model: dsl.Input[dsl.Model],
    evaluation: dsl.Input[dsl.Artifact],
    report: dsl.Input[dsl.Markdown],
    window: dict,
    deploy: dict,
    registry: dict,
    tracking: dict,
    models: dict,
    train_checksum: str,
    dev_checksum: str,
) -> NamedTuple("Outputs", version=str):
    from distilqa.components import failing_step, kfp_run_id

    with failing_step("register"):
        from collections import namedtuple

        from distilqa.components.gate import provenance
        from distilqa.components.register import run_register

        if not passed:
            print(f"register: nothing registered, the gate failed: {reason}")
            return namedtuple("Outputs", ["version"])("")
        facts = provenance(models, train_checksum, dev_checksum, kfp_run_id())
        version = run_register(model.path, evaluation.path, report.path, window, deploy, registry, tracking, facts)
        print(f"register: version {version}")
        return namedtuple("Outputs", ["version"])(version)
