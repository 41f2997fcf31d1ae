"""The training steps: finetune_teacher, general (S1), teacher_logits, intermediate (S2a), prediction (S2b).

Each step builds the stage's job (`distilqa.distill.config.StageJob`) from the profile's sections,
opens the stage's nested MLflow run, and runs the job on `resources.nproc_per_node` processes
(0 = one per GPU of the pod, 1 without GPUs) through the same launcher as `distilqa train
JOB.yaml`: under kfp.local with 2 CPU processes (gloo) it is the DDP path a 4-GPU pod takes with
NCCL. Rank 0 logs into the step's run. With `resources.checkpoint_root` set, checkpoints go to
<root>/<KFP run id>/<step>, outside the output artifact (uploaded only when the step succeeds), so a
retried pod resumes from the last one.

Every model and dataset arrives as a KFP artifact read through `.path`, so any pipeline root works.
No input changes from one pipeline run to the next (the run id and the MLflow parent run are found
from the environment), so KFP's cache skips a stage whose inputs did not change.
"""

from typing import Any

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def _run(step: str, job: dict, resources: dict, registry: dict) -> dict:
    """Run one stage's job in the step's nested MLflow run; returns the stage's record."""
    from distilqa.components import failing_step, kfp_run_id
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.config import StageJob
    from distilqa.distill.launch import LaunchConfig, launch
    from distilqa.tracking import find_pipeline_run, stage_run, tracking_uri

    r, reg, run_id = build_section("resources", resources), build_section("registry", registry), kfp_run_id()
    checkpoint_dir = f"{r.checkpoint_root.rstrip('/')}/{run_id or 'local'}/{step}" if r.checkpoint_root else ""
    uri = tracking_uri(reg.tracking_uri)
    with failing_step(step), stage_run(uri, find_pipeline_run(uri, reg.experiment, run_id), step) as run:
        stage_run_id = run.info.run_id if run is not None else ""
        full = StageJob(
            **job,
            checkpoint_dir=checkpoint_dir,
            features_cache=r.features_root,
            tracking_uri=uri,
            mlflow_run_id=stage_run_id,
        )
        if run is not None and full.stage == "teacher_logits":  # no trainer to log the job: its precision is here
            import mlflow

            from distilqa.settings import flatten

            mlflow.log_params({k: str(v)[:500] for k, v in flatten(full.to_dict()).items()})
        return launch(full, LaunchConfig(nproc_per_node=r.nproc_per_node))


def _job(stage: str, section: str, params: dict, window: dict, train_path: str, out_dir: str, **models: Any) -> dict:
    """A stage's job fields from the profile's sections as the pipeline passes them (plain JSON)."""
    from distilqa.pipelines.profile import build_section

    train, w = build_section(section, params), build_section("window", window)
    return {"stage": stage, "train_data": train_path, "output_dir": out_dir, "train": train, "window": w, **models}


def run_finetune_teacher(
    model: str,
    train_path: str,
    window: dict,
    params: dict,
    out_dir: str,
    registry: dict,
    resources: dict,
    step: str = "finetune_teacher",
) -> dict:
    job = _job("finetune", "teacher_finetune", params, window, train_path, out_dir, model=model)
    return _summary(_run(step, job, resources, registry))


def run_general(teacher: str, models: dict, general: dict, out_dir: str, registry: dict, resources: dict) -> dict:
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.student import StudentSpec

    m, g = build_section("models", models), build_section("general", general)
    spec = StudentSpec(m.student_layers, m.student_init)  # type: ignore[arg-type]
    job = _job(
        "general", "general", general, {}, _corpus(g.corpus, out_dir), out_dir, teacher=teacher, student_spec=spec
    )
    return _summary(_run("general", job, resources, registry))


def _corpus(corpus: str, out_dir: str) -> str:
    """builtin:dev-contexts: the shipped dev set's paragraphs as a corpus (smoke runs)."""
    if corpus != "builtin:dev-contexts":
        return corpus
    from pathlib import Path

    from distilqa.squad import load_squad

    path = Path(out_dir).parent / (Path(out_dir).name + "-corpus.txt")
    contexts = dict.fromkeys(p.context.replace("\n", " ") for _, p, _ in load_squad().iter_questions())
    path.write_text("\n".join(contexts) + "\n")
    return str(path)


def run_teacher_logits(
    teacher_dir: str,
    student_dir: str,
    train_path: str,
    window: dict,
    params: dict,
    out_dir: str,
    registry: dict,
    resources: dict,
) -> dict:
    """Every process fills its share of the cache S2b reads (params: the prediction section)."""
    models = {"teacher": teacher_dir, "student": student_dir, "logits_cache": out_dir}
    job = _job("teacher_logits", "prediction", params, window, train_path, out_dir, **models)
    return _run("teacher_logits", job, resources, registry)


def run_intermediate(
    teacher_dir: str,
    student_dir: str,
    train_path: str,
    window: dict,
    params: dict,
    out_dir: str,
    registry: dict,
    resources: dict,
) -> dict:
    models = {"teacher": teacher_dir, "student": student_dir}
    job = _job("intermediate", "intermediate", params, window, train_path, out_dir, **models)
    return _summary(_run("intermediate", job, resources, registry))


def run_prediction(
    teacher_dir: str,
    student_dir: str,
    train_path: str,
    logits_dir: str,
    window: dict,
    params: dict,
    out_dir: str,
    registry: dict,
    resources: dict,
) -> dict:
    models = {"teacher": teacher_dir, "student": student_dir, "logits_cache": logits_dir}
    job = _job("prediction", "prediction", params, window, train_path, out_dir, **models)
    return _summary(_run("prediction", job, resources, registry))


def _summary(record: dict) -> dict:
    result = record.get("result", {})  # wall_seconds_total: a retried step's time over every attempt
    return {
        "stage": record.get("stage", ""),
        "steps": result.get("steps", 0),
        "samples_per_s": result.get("samples_per_s") or 0.0,
        "world_size": result.get("world_size", 1),
        "precision": result.get("precision", ""),
        "wall_seconds": result.get("wall_seconds_total") or result.get("wall_seconds") or 0.0,
        "train_data_checksum": record.get("train_data_checksum", ""),
    }


def _annotate(artifact: Any, summary: dict) -> None:
    artifact.metadata.update({k: v for k, v in summary.items() if isinstance(v, int | float | str)})


def check_shared_teacher(model: str, same_as: str, same_as_is_base_lm: bool) -> None:
    """A DAG compiled with one teacher fine-tune for both roles must still be run with one base LM."""
    if same_as != model or not same_as_is_base_lm:
        from distilqa.errors import ConfigError

        raise ConfigError(
            "this pipeline was compiled with one teacher fine-tune for both roles (models.intermediate_teacher = "
            f"models.prediction_teacher, both base LMs); the run names {model!r} and {same_as!r} "
            f"(prediction_teacher_is_base_lm={same_as_is_base_lm}): compile it again with these models"
        )


@component(base_image=BASE_IMAGE)
def finetune_teacher_op(
    model: dsl.Input[dsl.Model],
    train: dsl.Input[dsl.Dataset],
    window: dict,
    params: dict,
    registry: dict,
    resources: dict,
    role: str,
    out: dsl.Output[dsl.Model],
    source: str = "",
    same_as: str = "",
    same_as_is_base_lm: bool = True,
):
    from distilqa.components.training import _annotate, check_shared_teacher, run_finetune_teacher

    if role == "shared":  # one fine-tune for both roles
        check_shared_teacher(source, same_as, same_as_is_base_lm)
    summary = run_finetune_teacher(
        model.path, train.path, window, params, out.path, registry, resources, f"finetune_{role}_teacher"
    )
    _annotate(out, {**summary, "source": source})


@component(base_image=BASE_IMAGE)
def general_op(
    teacher: dsl.Input[dsl.Model],
    models: dict,
    general: dict,
    registry: dict,
    resources: dict,
    out: dsl.Output[dsl.Model],
):
    from distilqa.components.training import _annotate, run_general

    _annotate(out, run_general(teacher.path, models, general, out.path, registry, resources))


@component(base_image=BASE_IMAGE)
def teacher_logits_op(
    teacher: dsl.Input[dsl.Model],
    student: dsl.Input[dsl.Model],
    train: dsl.Input[dsl.Dataset],
    window: dict,
    params: dict,
    registry: dict,
    resources: dict,
    out: dsl.Output[dsl.Artifact],
):
    from distilqa.components.training import _annotate, run_teacher_logits

    _annotate(
        out, run_teacher_logits(teacher.path, student.path, train.path, window, params, out.path, registry, resources)
    )


@component(base_image=BASE_IMAGE)
def intermediate_op(
    teacher: dsl.Input[dsl.Model],
    student: dsl.Input[dsl.Model],
    train: dsl.Input[dsl.Dataset],
    window: dict,
    params: dict,
    registry: dict,
    resources: dict,
    out: dsl.Output[dsl.Model],
):
    from distilqa.components.training import _annotate, run_intermediate

    _annotate(
        out, run_intermediate(teacher.path, student.path, train.path, window, params, out.path, registry, resources)
    )


@component(base_image=BASE_IMAGE)
def prediction_op(
    teacher: dsl.Input[dsl.Model],
    student: dsl.Input[dsl.Model],
    train: dsl.Input[dsl.Dataset],
    logits: dsl.Input[dsl.Artifact],
    window: dict,
    params: dict,
    registry: dict,
    resources: dict,
    out: dsl.Output[dsl.Model],
):
    from distilqa.components.training import _annotate, run_prediction

    _annotate(
        out,
        run_prediction(
            teacher.path, student.path, train.path, logits.path, window, params, out.path, registry, resources
        ),
    )
