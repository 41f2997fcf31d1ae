"""augment: the shard list, one shard of TinyBERT-style augmentation (fanned out with ParallelFor over
that list, so the width follows the run's augment.shards), then a merge."""

from distilqa.components import BASE_IMAGE, component
from kfp import dsl


def shard_numbers(augment: dict) -> list[int]:
    """1..augment.shards: the ParallelFor items, computed at run time from the submitted section."""
    from distilqa.pipelines.profile import build_section

    return list(range(1, build_section("augment", augment).shards + 1))


def run_augment_shard(train_path: str, augment: dict, mlm_dir: str, shard: int, out_path: str) -> dict:
    from distilqa.pipelines.profile import build_section

    from distilqa.augment.augment import AugmentConfig, Shard, augment_dataset
    from distilqa.augment.sources import MLMSource
    from distilqa.progress import progress_bar
    from distilqa.squad import load_squad, write_squad

    a = build_section("augment", augment)
    config = AugmentConfig(a.factor, a.replace_prob, a.candidates, a.seed)
    source = MLMSource(mlm_dir)
    result, stats = augment_dataset(
        load_squad(train_path),
        config,
        source,
        Shard(shard, a.shards),
        progress_bar(f"augment {shard}/{a.shards}", "paragraph"),
    )
    write_squad(result, out_path)
    return stats.to_json()


def run_augment_merge(shard_paths: list[str], out_path: str) -> int:
    from distilqa.augment.augment import merge_shards
    from distilqa.squad import load_squad, write_squad

    merged = merge_shards([load_squad(p) for p in shard_paths])
    write_squad(merged, out_path)
    return merged.num_questions


@component(base_image=BASE_IMAGE)
def augment_plan_op(augment: dict) -> list:
    from distilqa.components import failing_step

    with failing_step("augment_plan"):
        from distilqa.components.augment import shard_numbers

        return shard_numbers(augment)


@component(base_image=BASE_IMAGE)
def augment_shard_op(
    train: dsl.Input[dsl.Dataset],
    mlm: dsl.Input[dsl.Model],
    augment: dict,
    shard: int,
    out: dsl.Output[dsl.Dataset],
):
    from distilqa.components import failing_step

    with failing_step("augment_shard"):
        from distilqa.components.augment import run_augment_shard

        stats = run_augment_shard(train.path, augment, mlm.path, shard, out.path)
        out.metadata.update({k: v for k, v in stats.items() if isinstance(v, int | float | str)})


@component(base_image=BASE_IMAGE)
def augment_merge_op(shards: dsl.Input[list[dsl.Dataset]], out: dsl.Output[dsl.Dataset]) -> int:
    from distilqa.components import failing_step

    with failing_step("augment_merge"):
        from distilqa.components.augment import run_augment_merge

        questions = run_augment_merge([s.path for s in shards], out.path)
        out.metadata["questions"] = questions
        return questions
