"""finalize: the pipeline's ExitHandler step, run whether the DAG succeeded or failed.

It ends the MLflow parent run FINISHED or FAILED (tagged with the failing step and its error), ends
stage runs a killed pod left RUNNING, and, for a cluster deploy, removes a canary that a failed
deploy step left in the InferenceService so no traffic stays on an unvetted model.
"""

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def run_finalize(state: str, error: str, registry: dict, deploy: dict, kfp_run_id: str) -> dict:
    from distilqa.pipelines.profile import build_section

    from distilqa.tracking import close_pipeline_run, tracking_uri

    r, d = build_section("registry", registry), build_section("deploy", deploy)
    uri = tracking_uri(r.tracking_uri)
    closed = close_pipeline_run(uri, r.experiment, kfp_run_id, state, error) if uri else {}
    failed = state.upper() not in ("SUCCEEDED", "SUCCESS")
    if failed and d.mode == "cluster":
        from distilqa.serving.rollout import remove_canary

        closed["canary_removed"] = str(remove_canary(d.service_name, d.namespace))
    print(f"finalize: pipeline {state}: {closed}")
    return closed


@component(base_image=BASE_IMAGE)
def finalize_op(status: dsl.PipelineTaskFinalStatus, registry: dict, deploy: dict):
    from distilqa.components import kfp_run_id
    from distilqa.components.finalize import run_finalize

    run_finalize(status.state, status.error_message or "", registry, deploy, kfp_run_id())
