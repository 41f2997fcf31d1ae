"""MLflow bookkeeping shared by the pipeline's steps: one parent run per pipeline run, a nested run
per stage. Imported only by steps that track (mlflow is heavy); a blank tracking URI turns it off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any


def tracking_uri(configured: str = "") -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI", "")


@contextlib.contextmanager
def stage_run(uri: str, parent_run_id: str, stage: str, params: dict[str, Any] | None = None) -> Iterator[Any]:
    """A nested MLflow run for one stage (or nothing when no tracking URI); logs its wall time.

    MLFLOW_TRACKING_URI is set for the duration; a training step passes the run's id in its job, so
    rank 0 of the processes it starts logs into this run.
    """
    if not uri:
        t0 = time.perf_counter()
        yield None
        return
    import mlflow

    from distilqa.settings import flatten

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(
            run_id=None,
            run_name=stage,
            parent_run_id=parent_run_id or None,
            nested=bool(parent_run_id),
            experiment_id=_experiment_of(parent_run_id),
        ) as run:
            mlflow.set_tag("distilqa.stage", stage)
            if params:
                mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
            t0 = time.perf_counter()
            yield run
            mlflow.log_metric("stage_seconds", time.perf_counter() - t0)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def _experiment_of(parent_run_id: str) -> str | None:
    if not parent_run_id:
        return None
    import mlflow

    return mlflow.get_run(parent_run_id).info.experiment_id


def open_pipeline_run(uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> str:
    """The parent run of a pipeline run, RUNNING until the pipeline ends; returns its id ('' without tracking)."""
    if not uri:
        return ""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    # left RUNNING: the pipeline's ExitHandler ends it FINISHED or FAILED (close_pipeline_run)
    run = MlflowClient(uri).create_run(experiment_id, tags=tags, run_name=run_name)
    return run.info.run_id


def find_pipeline_run(uri: str, experiment: str, kfp_run_id: str) -> str:
    """The parent run that open_pipeline_run made for this KFP run ('' if none).

    Training steps look it up by the run's id instead of taking it as an input, so their inputs stay
    the same from one pipeline run to the next and KFP's cache can skip a stage nothing changed for.
    """
    if not uri or not kfp_run_id:
        return ""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    found = c.get_experiment_by_name(experiment)
    if found is None:
        return ""
    runs = c.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`kfp.run_id` = '{kfp_run_id}' and tags.`distilqa.pipeline` = 'true'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else ""


def note_failed_step(kfp_run_id: str, step: str, error: str) -> None:
    """Tag the pipeline's parent run with the step that failed (read by the ExitHandler's finalize step).

    Best effort: a step that fails must still fail with its own error, not with a tracking one.
    """
    uri = tracking_uri()
    if not uri or not kfp_run_id:
        return
    try:
        from mlflow import MlflowClient

        c = MlflowClient(uri)
        experiments = [e.experiment_id for e in c.search_experiments()]
        runs = c.search_runs(experiments, filter_string=f"tags.`kfp.run_id` = '{kfp_run_id}'", max_results=1)
        if runs and "distilqa.failed_step" not in runs[0].data.tags:
            c.set_tag(runs[0].info.run_id, "distilqa.failed_step", step)
            c.set_tag(runs[0].info.run_id, "distilqa.error", error[:4000])
    except Exception as exc:  # noqa: BLE001 - see the docstring
        print(f"{step}: could not record the failure in MLflow: {exc}", file=sys.stderr)


def close_pipeline_run(uri: str, experiment: str, kfp_run_id: str, state: str, error: str) -> dict[str, str]:
    """End the parent run: FINISHED when the DAG succeeded, else FAILED with the failing step's name.

    The failing step is the one a step recorded (note_failed_step), else a training stage whose nested
    run did not finish (a killed pod leaves it RUNNING), else what KFP's final status says.
    """
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    run_id = find_pipeline_run(uri, experiment, kfp_run_id)
    if not run_id:
        if state.upper() in ("SUCCEEDED", "SUCCESS") or not kfp_run_id:
            return {}
        # open-tracking itself failed (every other step waits for it): leave a FAILED run all the same
        found = c.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else c.create_experiment(experiment)
        tags = {"kfp.run_id": kfp_run_id, "distilqa.pipeline": "true", "distilqa.failed_step": "open_tracking"}
        run_id = c.create_run(experiment_id, tags=tags, run_name="pipeline").info.run_id
    parent = c.get_run(run_id)
    ok = state.upper() in ("SUCCEEDED", "SUCCESS")
    failed = parent.data.tags.get("distilqa.failed_step", "")
    if not ok and not failed:
        children = c.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=100
        )
        failed = ", ".join(
            r.data.tags.get("distilqa.stage", r.info.run_name) for r in children if r.info.status != "FINISHED"
        )
        c.set_tag(run_id, "distilqa.failed_step", failed or "unknown (see the KFP run)")
    if not ok and error and "distilqa.error" not in parent.data.tags:  # a step's own error is the better one
        c.set_tag(run_id, "distilqa.error", error[:4000])
    for child in c.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run_id}' and attributes.status = 'RUNNING'",
        max_results=100,
    ):  # a killed stage: its run can never end by itself
        c.set_terminated(child.info.run_id, "KILLED")
    status = "FINISHED" if ok else "FAILED"
    c.set_tag(run_id, "kfp.state", state)
    c.set_terminated(run_id, status)
    return {"run_id": run_id, "status": status, "failed_step": "" if ok else failed or "unknown (see the KFP run)"}
