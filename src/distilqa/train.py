"""The one training entry: `distilqa train JOB.yaml`, or `torchrun ... -m distilqa.train JOB.yaml`.

Every process of a stage runs this, whatever launched it: the CLI in-process for one CPU
process, torchrun for N processes on one node (gloo on CPUs, NCCL on GPUs) or on several nodes,
a pipeline step in its pod. It joins the process group first (so the teacher-logit cache is
filled by every rank, each on its own device), checks that every rank got the same job, and runs
the stage. Bad settings or data stop every rank with one message and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from distilqa.distill.config import StageJob
from distilqa.errors import DistilqaError

EXIT_USAGE = 2


def run(job: StageJob) -> dict[str, Any]:
    from distilqa.distill import distributed

    d = distributed.init_distributed()
    distributed.require_same_on_every_rank(d, "job", job.to_dict())
    if job.stage == "finetune":
        from distilqa.distill.finetune import finetune

        return finetune(job)
    if job.stage == "general":
        from distilqa.distill.general import distill_general

        return distill_general(job)
    if job.stage == "intermediate":
        from distilqa.distill.intermediate import distill_intermediate

        return distill_intermediate(job)
    if job.stage == "teacher_logits":
        from distilqa.distill.prediction import precompute_teacher_logits

        return precompute_teacher_logits(job)
    from distilqa.distill.prediction import distill_prediction

    return distill_prediction(job)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m distilqa.train JOB.yaml", file=sys.stderr)
        return EXIT_USAGE
    try:
        run(StageJob.read(args[0]))
    except DistilqaError as exc:
        import os

        rank = os.environ.get("RANK")
        several = rank is not None and os.environ.get("WORLD_SIZE", "1") != "1"
        print(f"distilqa train{f' (rank {rank})' if several else ''}: error: {exc}", file=sys.stderr, flush=True)
        if several:
            # leave now: tearing down a process group whose peers are stopping too can abort (SIGABRT in
            # gloo's threads at interpreter exit), which would turn a clear exit 2 into a crash
            sys.stdout.flush()
            os._exit(EXIT_USAGE)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
