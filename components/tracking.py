"""open_tracking: the MLflow parent run of this pipeline run, tagged with the KFP run id."""

from distilqa.components import BASE_IMAGE, component


def run_open_tracking(registry: dict, kfp_run_id: str, profile: str) -> dict:
    from distilqa.pipelines.profile import build_section

    from distilqa.tracking import open_pipeline_run, tracking_uri

    r = build_section("registry", registry)
    uri = tracking_uri(r.tracking_uri)
    run_id = open_pipeline_run(
        uri,
        r.experiment,
        f"pipeline-{profile}",
        {"kfp.run_id": kfp_run_id, "distilqa.profile": profile, "distilqa.pipeline": "true"},
    )
    return {"uri": uri, "parent_run_id": run_id}


@component(base_image=BASE_IMAGE)
def open_tracking_op(registry: dict, profile: str) -> dict:
    from distilqa.components import failing_step, kfp_run_id

    with failing_step("open_tracking"):
        from distilqa.components.tracking import run_open_tracking

        return run_open_tracking(registry, kfp_run_id(), profile)
