"""Kubeflow pipeline steps (imported as `distilqa.components`): thin typed functions over the library.

Each module holds `run_*` (a plain typed function that calls the library; what tests and the local
runner call) and its KFP component (`*_op`, a lightweight component whose body imports the module
and calls `run_*`). Images are set per task from the profile (`set_container_image`).
"""

BASE_IMAGE = "python:3.11-slim"  # replaced per task by resources.training_image / serving_image


def component(**options):  # type: ignore[no-untyped-def]
    """`@dsl.component`, except inside a running step: there KFP sets KFP_RUNTIME and kfp.dsl only
    offers the runtime types, and the module is imported just for its `run_*` function."""
    from kfp import dsl

    decorator = getattr(dsl, "component", None)
    if decorator is None:
        return lambda func: func
    return decorator(**options)
