"""The distilqa pipeline: SQuAD 2.0 in, a gated, registered, served student out (DESIGN.md's flow).

Every profile section is one pipeline parameter (a JSON object), so every hyperparameter can be
changed when a run is submitted. GPU steps get the accelerator, the GPU node pool's selector and
toleration, a memory-backed /dev/shm, requests, retries (resuming from checkpoints) and the S3 /
MLflow secrets; none of that matters to kfp.local, which ignores it.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import Any

from distilqa.components.augment import augment_merge_op, augment_shard_op
from distilqa.components.deploy import deploy_op
from distilqa.components.evaluate import evaluate_op
from distilqa.components.gate import gate_op
from distilqa.components.ingest import ingest_op
from distilqa.components.models import import_model_op, prepare_student_op
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
    from kfp import kubernetes

    r = profile.resources
    task.set_display_name(name)
    task.set_container_image(r.training_image)
    task.set_cpu_request(r.cpu_request).set_memory_request(r.memory_request)
    if r.gpus > 0:
        task.set_accelerator_type(r.accelerator).set_accelerator_limit(r.gpus)
        label, _, value = r.gpu_node_selector.partition("=")
        if label:
            kubernetes.add_node_selector(task, label_key=label, label_value=value)
        kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=r.shm_size
        )
    if r.retries:
        task.set_retry(num_retries=r.retries, backoff_duration="60s", backoff_factor=2.0)
    return _secrets(task, profile)


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


def build_pipeline(profile: Profile, condition_on_gate: bool = True) -> Any:
    """The @dsl.pipeline for a profile: its sections are the parameters' defaults.

    condition_on_gate puts register and deploy under `dsl.If(gate.passed == True)`, as a cluster runs
    them. kfp.local 2.17 cannot evaluate a condition on a task output ('Could not resolve parent
    input'), so the local runner builds without it; register and deploy also check `passed`
    themselves, so both DAGs register nothing on a failed gate.
    """
    sections = profile.sections()
    # conditions compare scalar parameters, so the models section is flattened into models_<key>
    model_params = {f"models_{k}": v for k, v in sections.pop("models").items()}
    defaults = {**sections, **model_params}
    names = list(defaults)

    def distilqa_pipeline(*args: Any, **kwargs: Any) -> None:
        p = {**dict(zip(names, args, strict=False)), **kwargs}
        p["models"] = {k.removeprefix("models_"): p[k] for k in model_params}
        m = _Models(p)
        tracking = _cpu(
            open_tracking_op(registry=p["registry"], kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, profile=profile.name),
            profile,
            "open tracking",
        )
        tracking.set_caching_options(False)
        track = tracking.output
        # what every training step needs to run its processes and find its checkpoints again after a retry
        run = {"resources": p["resources"], "kfp_run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
        ingest = _cpu(ingest_op(data=p["data"]), profile, "ingest")
        train, dev = ingest.outputs["train"], ingest.outputs["dev"]

        # augmentation: shards in parallel, then merged (input of S2a)
        with dsl.ParallelFor(list(range(1, profile.augment.shards + 1)), parallelism=8) as shard:
            aug = _cpu(
                augment_shard_op(train=train, augment=p["augment"], mlm_model=m.general_teacher, shard=shard),
                profile,
                "augment shard",
            )
        merged = _cpu(augment_merge_op(shards=dsl.Collected(aug.outputs["out"])), profile, "augment merge")

        # teachers: fine-tuned first when they are base LMs, else pinned as artifacts
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
                tuned = _gpu(
                    finetune_teacher_op(
                        model=location,
                        train=train,
                        window=p["window"],
                        params=p["teacher_finetune"],
                        tracking=track,
                        role=role,
                        **(guard if shared else {}),
                        **run,
                    ),
                    profile,
                    f"finetune {role} teacher",
                )
            with dsl.Else():
                pinned = _cpu(import_model_op(location=location), profile, f"import {role} teacher")
            teachers[role] = dsl.OneOf(tuned.outputs["Output"], pinned.outputs["Output"])
        if shared:
            teachers["intermediate"] = teachers["prediction"] = teachers["shared"]

        # student backbone: S1 general distillation unless a ready backbone is given
        with dsl.If(m.student_backbone == "", name="run-general-distillation"):
            s1 = _gpu(
                general_op(teacher=m.general_teacher, models=p["models"], general=p["general"], tracking=track, **run),
                profile,
                "S1 general distillation",
            )
        with dsl.Else():
            ready = _cpu(
                prepare_student_op(backbone=m.student_backbone, models=p["models"]), profile, "student backbone"
            )
        student = dsl.OneOf(s1.outputs["Output"], ready.outputs["Output"])

        s2a = _gpu(
            intermediate_op(
                teacher=teachers["intermediate"],
                student=student,
                train=merged.outputs["out"],
                window=p["window"],
                params=p["intermediate"],
                tracking=track,
                **run,
            ),
            profile,
            "S2a intermediate distillation",
        )
        logits = _gpu(
            teacher_logits_op(
                teacher=teachers["prediction"],
                student=student,
                train=train,
                window=p["window"],
                params=p["prediction"],
                tracking=track,
                **run,
            ),
            profile,
            "teacher logits",
        )
        s2b = _gpu(
            prediction_op(
                teacher=teachers["prediction"],
                student=s2a.outputs["out"],
                train=train,
                logits=logits.outputs["out"],
                window=p["window"],
                params=p["prediction"],
                tracking=track,
                **run,
            ),
            profile,
            "S2b prediction distillation",
        )

        ev = _cpu(
            evaluate_op(model=s2b.outputs["out"], dev=dev, window=p["window"], gate=p["gate"], deploy=p["deploy"]),
            profile,
            "evaluate",
        )
        ev.set_cpu_request("4").set_memory_request("8Gi")
        gate = _cpu(
            gate_op(
                f1=ev.outputs["f1"],
                p95_ms=ev.outputs["p95_ms"],
                evaluation=ev.outputs["evaluation"],
                gate=p["gate"],
                registry=p["registry"],
                tracking=track,
                models=p["models"],
                train_checksum=ingest.outputs["train_checksum"],
                dev_checksum=ingest.outputs["dev_checksum"],
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            profile,
            "gate",
        )
        gate.set_caching_options(False)
        passed = (
            dsl.If(gate.outputs["decision"] == "passed", name="gate-passed") if condition_on_gate else nullcontext()
        )
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
                    registry=p["registry"],
                    tracking=track,
                    models=p["models"],
                    train_checksum=ingest.outputs["train_checksum"],
                    dev_checksum=ingest.outputs["dev_checksum"],
                    kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
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
                    resources=p["resources"],
                    tracking=track,
                ),
                profile,
                "deploy",
                image=profile.resources.serving_image,
            )
            dep.set_caching_options(False)

    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=type(value))
        for name, value in defaults.items()
    ]
    distilqa_pipeline.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    distilqa_pipeline.__annotations__ = {name: type(value) for name, value in defaults.items()}
    distilqa_pipeline.__name__ = "distilqa"
    return dsl.pipeline(name=f"distilqa-{profile.name}", description=profile.description[:500])(distilqa_pipeline)


def compile_pipeline(profile: Profile, output: str) -> None:
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(profile), package_path=output)
