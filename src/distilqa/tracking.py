"""MLflow bookkeeping shared by the pipeline's steps: one parent run per pipeline run, a nested run
per stage. Imported only by steps that track (mlflow is heavy); a blank tracking URI turns it off.
"""

from __future__ import annotations

import contextlib
import os
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
    """The parent run of a pipeline run; returns its id ('' without tracking)."""
    if not uri:
        return ""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(run_name=run_name, tags=tags)
    mlflow.end_run()
    return run.info.run_id
