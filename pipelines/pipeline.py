"""The distilqa pipeline: SQuAD 2.0 in, a gated, registered, served student out (DESIGN.md's flow).

Every profile section but `resources` is one pipeline parameter (a JSON object), so every
hyperparameter can be changed when a run is submitted; `resources` (images, GPUs, node pools) is
fixed at compile time. Models and datasets pass between steps as KFP artifacts, so the pipeline
root may be minio://, s3:// or gs://. GPU steps get the accelerator, the GPU node pool's selector
and toleration, a memory-backed /dev/shm, requests, retries (resuming from checkpoints) and the S3 /
MLflow secrets; every step gets the run id from its pod's `pipeline/runid` label. kfp.local ignores
the Kubernetes settings; `distilqa run` sets the run id itself.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import Any

from distilqa.components import RUN_ID_ENV
from distilqa.components.augment import augment_merge_op, augment_plan_op, augment_shard_op
from distilqa.components.deploy import deploy_op
from distilqa.components.evaluate import evaluate_op
from distilqa.components.finalize import finalize_op
from distilqa.components.gate import gate_op
from distilqa.components.ingest import ingest_op
from distilqa.components.models import MLM, QA, augment_mlm_op, import_model_op, prepare_student_op
from distilqa.components.register import register_op
from distilqa.components.tracking import open_tracking_op
from distilqa.components.training import (
    finetune_teacher_op,
    general_op,
    intermediate_op,
    prediction_op,
    teacher_logits_op,
)
from distilqa.pipelines.profile import Profile
from kfp import dsl

GPU_STEPS = ("finetune_teacher", "general", "teacher_logits", "intermediate", "prediction")


def _gpu(task: Any, profile: Profile, name: str) -> Any:
    """Cluster settings of a training step (kfp-kubernetes); ignored by kfp.local."""
    r = profile.resources
    task.set_display_name(name)
    task.set_container_image(r.training_image)
    task.set_cpu_request(r.cpu_request).set_memory_request(r.memory_request)
    if r.gpus > 0:
        _on_gpu_pool(task, profile, r.gpus)
    if r.retries:
        task.set_retry(num_retries=r.retries, backoff_duration="60s", backoff_factor=2.0)
    return _secrets(task, profile)


def _on_gpu_pool(task: Any, profile: Profile, gpus: int) -> None:
    from kfp import kubernetes

    r = profile.resources
    task.set_accelerator_type(r.accelerator).set_accelerator_limit(gpus)
    label, _, value = r.gpu_node_selector.partition("=")
    if label:
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=r.shm_size)


def _augment_resources(task: Any, profile: Profile) -> None:
    """An augmentation shard's MLM candidate pass is GPU work (~78 PFLOP for SQuAD train x20 in all):
    one GPU of the training pool per shard, or a CPU pod with explicit requests when augment_gpus is 0."""
    r = profile.resources
    if r.augment_gpus > 0:
        task.set_container_image(r.training_image)
        _on_gpu_pool(task, profile, r.augment_gpus)
    task.set_cpu_request(r.augment_cpu_request).set_memory_request(r.augment_memory_request)
    if r.retries:
        task.set_retry(num_retries=r.retries, backoff_duration="60s", backoff_factor=2.0)


def _secrets(task: Any, profile: Profile) -> Any:
    from kfp import kubernetes

    r = profile.resources
    kubernetes.use_secret_as_env(
        task,
        secret_name=r.s3_secret,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
        },
        optional=True,
    )
    kubernetes.use_secret_as_env(
        task,
        secret_name=r.mlflow_secret,
        secret_key_to_env={
            "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI",
            "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
        },
        optional=True,
    )
    # the run id without an input (inputs are KFP's cache key): the label KFP puts on every run's pods
    kubernetes.use_field_path_as_env(task, env_name=RUN_ID_ENV, field_path="metadata.labels['pipeline/runid']")
    return task


def _cpu(task: Any, profile: Profile, name: str, image: str | None = None) -> Any:
    task.set_display_name(name)
    task.set_container_image(image or profile.resources.cpu_image)
    return _secrets(task, profile)


class _Models:
    """models_<key> pipeline parameters by attribute."""

    def __init__(self, p: dict[str, Any]) -> None:
        self._p = p

    def __getattr__(self, key: str) -> Any:
        return self._p[f"models_{key}"]


def one_teacher_finetune(profile: Profile) -> bool:
    """Both teacher roles name the same base LM (the cpu profile's MiniLM): fine-tune it once, not twice."""
    m = profile.models
    return (
        m.intermediate_teacher == m.prediction_teacher
        and m.intermediate_teacher_is_base_lm
        and (m.prediction_teacher_is_base_lm)
    )


def build_pipeline(profile: Profile, condition_on_gate: bool = True, pipeline_root: str = "") -> Any:
    """The @dsl.pipeline for a profile: its sections are the parameters' defaults.

    `resources` is not a run parameter: images, GPUs and node pools are fixed when the pipeline is
    compiled, so editing them in the KFP UI could only mislead; they are constants of the DAG.
    Models and data pass between steps as artifacts; a model location enters through an import
    step only. The whole DAG runs under an ExitHandler that closes the MLflow parent run.

    condition_on_gate puts register and deploy under `dsl.If(gate.passed == True)`, as a cluster runs
    them. kfp.local 2.17 cannot evaluate a condition on a task output ('Could not resolve parent
    input'), so the local runner builds without it; register and deploy also check `passed`
    themselves, so both DAGs register nothing on a failed gate.
    """
    sections = profile.sections()
    resources = sections.pop("resources")  # compile-time: see the docstring
    # conditions compare scalar parameters, so the models section is flattened into models_<key>
    model_params = {f"models_{k}": v for k, v in sections.pop("models").items()}
    defaults = {**sections, **model_params}
    names = list(defaults)

    def distilqa_pipeline(*args: Any, **kwargs: Any) -> None:
        p = {**dict(zip(names, args, strict=False)), **kwargs}
        p["models"] = {k.removeprefix("models_"): p[k] for k in model_params}
        finish = _cpu(
            finalize_op(registry=p["registry"], deploy=p["deploy"]),
            profile,
            "finalize",
        )
        finish.set_caching_options(False)
        with dsl.ExitHandler(finish, name="distilqa"):
            _steps(p, profile, resources, condition_on_gate)

    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=type(value))
        for name, value in defaults.items()
    ]
    distilqa_pipeline.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    distilqa_pipeline.__annotations__ = {name: type(value) for name, value in defaults.items()}
    distilqa_pipeline.__name__ = "distilqa"
    return dsl.pipeline(
        name=f"distilqa-{profile.name}", description=profile.description[:500], pipeline_root=pipeline_root or None
    )(distilqa_pipeline)


def _steps(p: dict[str, Any], profile: Profile, resources: dict[str, Any], condition_on_gate: bool) -> None:
    """Every step of the DAG, wired by artifacts (p: the run parameters, models as p["models"])."""
    m = _Models(p)
    tracking = _cpu(
        open_tracking_op(registry=p["registry"], profile=profile.name),
        profile,
        "open tracking",
    )
    tracking.set_caching_options(False)
    track = tracking.output
    # what every training step needs: the same on every run (the run id comes from the environment), so
    # a stage whose inputs did not change is taken from KFP's cache
    run = {"resources": resources, "registry": p["registry"]}
    # every step starts after open-tracking (.after(tracking) on the DAG's sources): whatever fails, the
    # MLflow parent run exists for the ExitHandler to mark FAILED
    ingest = _cpu(ingest_op(data=p["data"]), profile, "ingest").after(tracking)
    train, dev = ingest.outputs["train"], ingest.outputs["dev"]

    # augmentation: as many shards as the run's augment.shards, in parallel, then merged (input of S2a)
    mlm = _cpu(augment_mlm_op(augment=p["augment"], models=p["models"]), profile, "import augmentation MLM")
    plan = _cpu(augment_plan_op(augment=p["augment"]), profile, "augmentation shards").after(tracking)
    mlm.after(tracking)
    with dsl.ParallelFor(plan.output, parallelism=8) as shard:
        aug = _cpu(
            augment_shard_op(train=train, mlm=mlm.outputs["out"], augment=p["augment"], shard=shard),
            profile,
            "augment shard",
        )
        _augment_resources(aug, profile)
    merged = _cpu(augment_merge_op(shards=dsl.Collected(aug.outputs["out"])), profile, "augment merge")

    # teachers: imported, then fine-tuned first when they are base LMs
    teachers = {}
    roles = [
        ("intermediate", m.intermediate_teacher, m.intermediate_teacher_is_base_lm),
        ("prediction", m.prediction_teacher, m.prediction_teacher_is_base_lm),
    ]
    shared = one_teacher_finetune(profile)
    if shared:  # the same base LM in both roles: one fine-tune serves both
        roles = [("shared", m.intermediate_teacher, m.intermediate_teacher_is_base_lm)]
    for role, location, base in roles:
        # a shared fine-tune checks at run time that the submitted roles still name one base LM
        guard = {"same_as": m.prediction_teacher, "same_as_is_base_lm": m.prediction_teacher_is_base_lm}
        with dsl.If(base == True, name=f"{role}-teacher-is-base-lm"):  # noqa: E712 - a pipeline condition
            base_lm = _cpu(import_model_op(location=location, auto_class=MLM), profile, f"import {role} base LM")
            base_lm.after(tracking)
            tuned = _gpu(
                finetune_teacher_op(
                    model=base_lm.outputs["out"],
                    train=train,
                    window=p["window"],
                    params=p["teacher_finetune"],
                    role=role,
                    source=location,
                    **(guard if shared else {}),
                    **run,
                ),
                profile,
                f"finetune {role} teacher",
            ).after(tracking)
        with dsl.Else():
            pinned = _cpu(import_model_op(location=location, auto_class=QA), profile, f"import {role} teacher")
            pinned.after(tracking)
        teachers[role] = dsl.OneOf(tuned.outputs["out"], pinned.outputs["out"])
    if shared:
        teachers["intermediate"] = teachers["prediction"] = teachers["shared"]

    # student backbone: S1 general distillation unless a ready backbone is given
    with dsl.If(m.student_backbone == "", name="run-general-distillation"):
        general_teacher = _cpu(
            import_model_op(location=m.general_teacher, auto_class=MLM), profile, "import general teacher"
        ).after(tracking)
        s1 = _gpu(
            general_op(teacher=general_teacher.outputs["out"], models=p["models"], general=p["general"], **run),
            profile,
            "S1 general distillation",
        ).after(tracking)
    with dsl.Else():
        ready = _cpu(prepare_student_op(backbone=m.student_backbone, models=p["models"]), profile, "student backbone")
        ready.after(tracking)
    student = dsl.OneOf(s1.outputs["out"], ready.outputs["out"])

    common = {"window": p["window"], **run}
    s2a = _gpu(
        intermediate_op(
            teacher=teachers["intermediate"],
            student=student,
            train=merged.outputs["out"],
            params=p["intermediate"],
            **common,
        ),
        profile,
        "S2a intermediate distillation",
    ).after(tracking)
    logits = _gpu(
        teacher_logits_op(
            teacher=teachers["prediction"], student=student, train=train, params=p["prediction"], **common
        ),
        profile,
        "teacher logits",
    ).after(tracking)
    s2b = _gpu(
        prediction_op(
            teacher=teachers["prediction"],
            student=s2a.outputs["out"],
            train=train,
            logits=logits.outputs["out"],
            params=p["prediction"],
            **common,
        ),
        profile,
        "S2b prediction distillation",
    ).after(tracking)

    ev = _cpu(
        evaluate_op(model=s2b.outputs["out"], dev=dev, window=p["window"], gate=p["gate"], deploy=p["deploy"]),
        profile,
        "evaluate",
    )
    ev.set_cpu_request("4").set_memory_request("8Gi")
    # what the gate's model card and the registered version record about where the model came from
    lineage = {
        "registry": p["registry"],
        "tracking": track,
        "models": p["models"],
        "train_checksum": ingest.outputs["train_checksum"],
        "dev_checksum": ingest.outputs["dev_checksum"],
    }
    gate = _cpu(
        gate_op(
            f1=ev.outputs["f1"],
            p95_ms=ev.outputs["p95_ms"],
            evaluation=ev.outputs["evaluation"],
            gate=p["gate"],
            **lineage,
        ),
        profile,
        "gate",
    )
    gate.set_caching_options(False)
    passed = dsl.If(gate.outputs["decision"] == "passed", name="gate-passed") if condition_on_gate else nullcontext()
    with passed:
        reg = _cpu(
            register_op(
                passed=gate.outputs["passed"],
                reason=gate.outputs["reason"],
                model=s2b.outputs["out"],
                evaluation=ev.outputs["evaluation"],
                report=gate.outputs["report"],
                window=p["window"],
                deploy=p["deploy"],
                **lineage,
            ),
            profile,
            "register",
        )
        reg.set_caching_options(False)
        dep = _cpu(
            deploy_op(
                version=reg.outputs["version"],
                dev=dev,
                predictions=ev.outputs["predictions"],
                deploy=p["deploy"],
                registry=p["registry"],
                resources=resources,
                tracking=track,
            ),
            profile,
            "deploy",
            image=profile.resources.serving_image,
        )
        dep.set_caching_options(False)


def compile_pipeline(profile: Profile, output: str, pipeline_root: str = "") -> None:
    """The KFP package of a profile. pipeline_root ("" = the cluster's kfp-launcher default) may be any
    root the launcher supports (minio://, s3://, gs://): steps read their inputs through `.path`."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(profile, pipeline_root=pipeline_root), package_path=output)
