"""ingest: read, validate and slice the train and dev sets once; every later step reads these files."""

from typing import NamedTuple

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def resolve_data(uri: str) -> str:
    from distilqa.squad import DEFAULT_DEV_SET

    return str(DEFAULT_DEV_SET) if uri == "builtin:dev" else uri


def run_ingest(data: dict, train_path: str, dev_path: str) -> dict:
    from distilqa.pipelines.profile import article_range, build_section

    from distilqa.distill.provenance import data_checksum
    from distilqa.squad import load_squad, write_squad

    d = build_section("data", data)
    out = {}
    for split, uri, articles, path in (
        ("train", d.train, d.train_articles, train_path),
        ("dev", d.dev, d.dev_articles, dev_path),
    ):
        dataset = load_squad(resolve_data(uri))
        if articles:
            start, stop = article_range(articles, f"data.{split}_articles")
            dataset = dataset.select_articles(list(range(start, min(stop, len(dataset.articles)))))
        if split == "train" and d.max_train_questions:
            dataset = dataset.first_questions(d.max_train_questions)
        write_squad(dataset, path)
        out[f"{split}_questions"] = dataset.num_questions
        out[f"{split}_checksum"] = data_checksum(path)
    return out


@component(base_image=BASE_IMAGE)
def ingest_op(data: dict, train: dsl.Output[dsl.Dataset], dev: dsl.Output[dsl.Dataset]) -> NamedTuple(
    "Outputs", train_questions=int, dev_questions=int, train_checksum=str, dev_checksum=str
):
    from distilqa.components import failing_step

    with failing_step("ingest"):
        from collections import namedtuple

        from distilqa.components.ingest import run_ingest

        r = run_ingest(data, train.path, dev.path)
        train.metadata.update({"questions": r["train_questions"], "checksum": r["train_checksum"]})
        dev.metadata.update({"questions": r["dev_questions"], "checksum": r["dev_checksum"]})
        outputs = namedtuple("Outputs", ["train_questions", "dev_questions", "train_checksum", "dev_checksum"])
        return outputs(r["train_questions"], r["dev_questions"], r["train_checksum"], r["dev_checksum"])
