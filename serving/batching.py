"""Dynamic micro-batching: questions of concurrent requests share one forward pass.

Requests wait at most `max_wait_s` for company; a batch closes early at `max_batch_size`
questions. `workers` batches compute at once, each on its own thread with its share of the cores
(`distilqa.inference.share_cores`): while one batch tokenises and decodes in Python, the other's matmuls keep
the cores busy (+11 % at int8 on 2 cores, docs/serving.md). Answers do not depend on which batch or
worker a question lands in (QAModel's one-length passes; distilqa.quantize for int8).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from distilqa.inference import DEFAULT_WORKERS

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    max_batch_size: int = 8  # questions; small enough to leave work for the other workers
    max_wait_s: float = 0.005
    workers: int = DEFAULT_WORKERS  # batches computing at once (`distilqa predict --workers` must match)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or not 0 <= self.max_wait_s <= 10 or self.workers < 1:
            raise ValueError("max_batch_size and workers must be positive and max_wait_s within [0, 10] seconds")


class MicroBatcher(Generic[Item, Result]):
    def __init__(
        self,
        run: Callable[[list[Item]], list[Result]],
        config: BatchingConfig,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run = run
        self.config = config
        self.on_batch = on_batch
        self.queue: asyncio.Queue[tuple[Sequence[Item], asyncio.Future]] | None = None
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="distilqa-infer")
        self.worker: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()

    async def submit(self, items: Sequence[Item]) -> tuple[list[Result], float, int]:
        """Results for `items`, the compute seconds of the batch they rode in, and its size."""
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.get_running_loop().create_task(self._work())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def _work(self) -> None:
        free = asyncio.Semaphore(self.config.workers)
        while True:
            await free.acquire()  # a batch starts gathering only when a worker can take it
            jobs = await self._gather()
            task = asyncio.get_running_loop().create_task(self._compute(jobs))
            self.running.add(task)
            task.add_done_callback(lambda t: (self.running.discard(t), free.release()))

    async def _gather(self) -> list[tuple[Sequence[Item], asyncio.Future]]:
        """The first waiting request, and whatever else arrives within max_wait_s, up to max_batch_size."""
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        jobs = [await self.queue.get()]
        size = len(jobs[0][0])
        deadline = loop.time() + self.config.max_wait_s
        while size < self.config.max_batch_size:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                break
            jobs.append(job)
            size += len(job[0])
        return jobs

    async def _compute(self, jobs: list[tuple[Sequence[Item], asyncio.Future]]) -> None:
        items = [item for job_items, _ in jobs for item in job_items]
        t0 = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, self.run, items)
        except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it
            for _, future in jobs:
                if not future.done():
                    future.set_exception(exc)
            return
        seconds = time.perf_counter() - t0
        if self.on_batch:
            self.on_batch(len(items), seconds)
        begin = 0
        for job_items, future in jobs:
            if not future.done():
                future.set_result((results[begin : begin + len(job_items)], seconds, len(items)))
            begin += len(job_items)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        for task in list(self.running):
            task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
