"""Dynamic micro-batching: questions of concurrent requests share one forward pass.

Requests wait at most `max_wait_s` for company; a batch closes early at `max_batch_size`
questions. One worker thread runs the model (torch already uses every core inside a matmul), so
the event loop stays free to accept and validate requests while a batch computes. Within a batch,
windows are sorted by length before padding (QAModel), which is the length bucketing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    max_batch_size: int = 32  # questions
    max_wait_s: float = 0.005

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or not 0 <= self.max_wait_s <= 10:
            raise ValueError("max_batch_size must be positive and max_wait_s within [0, 10] seconds")


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
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distilqa-infer")
        self.worker: asyncio.Task | None = None

    async def submit(self, items: Sequence[Item]) -> tuple[list[Result], float, int]:
        """Results for `items`, the compute seconds of the batch they rode in, and its size."""
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.get_running_loop().create_task(self._work())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def _work(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
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
            items = [item for job_items, _ in jobs for item in job_items]
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.run, items)
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
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
        self.executor.shutdown(wait=False, cancel_futures=True)
