"""Kubeflow pipeline steps (imported as `distilqa.components`): thin typed functions over the library.

Each module holds `run_*` (a plain typed function that calls the library; what tests and the local
runner call) and its KFP component (`*_op`, a lightweight component whose body imports the module
and calls `run_*`). Images are set per task from the profile (`set_container_image`).
"""

import contextlib
from collections.abc import Iterator

BASE_IMAGE = "python:3.11-slim"  # replaced per task by resources.training_image / serving_image

RUN_ID_ENV = "DISTILQA_KFP_RUN_ID"  # the pipeline run's id: a pod label on a cluster, set by `distilqa run` locally


@contextlib.contextmanager
def failing_step(name: str) -> Iterator[None]:
    """Run a step's body; if it raises, name the step on the pipeline's MLflow run, then re-raise."""
    try:
        yield
    except BaseException as exc:
        from distilqa.tracking import note_failed_step

        note_failed_step(kfp_run_id(), name, f"{type(exc).__name__}: {exc}")
        raise


def kfp_run_id() -> str:
    """This pipeline run's id, from the environment rather than an input (inputs form KFP's cache key)."""
    import os

    return os.environ.get(RUN_ID_ENV, "")


def component(**options):  # type: ignore[no-untyped-def]
    """`@dsl.component`, except inside a running step: there KFP sets KFP_RUNTIME and kfp.dsl only
    offers the runtime types, and the module is imported just for its `run_*` function.

    The images carry kfp already (distilqa depends on it), so a step starts `python3 -m
    kfp.dsl.executor_main` directly: no pip install into the image at pod start, no network needed.
    """
    from kfp import dsl

    decorator = getattr(dsl, "component", None)
    if decorator is None:
        return lambda func: func
    return decorator(install_kfp_package=False, **options)
