"""The micro-batcher: questions of concurrent requests share batches, and batches share the cores."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from distilqa.serving.batching import BatchingConfig, MicroBatcher

from distilqa.inference import threads_per_worker


def _batcher(config: BatchingConfig):
    """A batcher whose model takes 0.2 s per batch and records how many batches ran at once."""
    lock = threading.Lock()
    state = {"running": 0, "peak": 0, "sizes": []}

    def run(items: list[int]) -> list[int]:
        with lock:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            state["sizes"].append(len(items))
        time.sleep(0.2)
        with lock:
            state["running"] -= 1
        return [10 * i for i in items]

    return MicroBatcher(run, config), state


def _submit_all(batcher: MicroBatcher, requests: list[list[int]]) -> list[tuple[list[int], float, int]]:
    async def main():
        try:
            return await asyncio.gather(*(batcher.submit(r) for r in requests))
        finally:
            batcher.close()

    return asyncio.run(main())


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_batches_run_on_as_many_workers_as_configured(workers):
    batcher, state = _batcher(BatchingConfig(max_batch_size=2, max_wait_s=0.05, workers=workers))
    requests = [[i] for i in range(12)]
    results = _submit_all(batcher, requests)
    assert [r[0] for r in results] == [[10 * i] for i in range(12)]  # each request gets its own answers back
    assert state["peak"] == workers
    assert max(state["sizes"]) <= 2 and sum(state["sizes"]) == 12
    for _, seconds, size in results:
        assert seconds >= 0.19 and 1 <= size <= 2


def test_a_request_larger_than_the_batch_rides_whole():
    batcher, state = _batcher(BatchingConfig(max_batch_size=2, max_wait_s=0.0, workers=1))
    results = _submit_all(batcher, [[1, 2, 3, 4, 5]])
    assert results[0][0] == [10, 20, 30, 40, 50] and state["sizes"] == [5]


def test_a_failing_batch_fails_its_requests_only():
    calls = []

    def run(items):
        calls.append(items)
        if -1 in items:
            raise RuntimeError("model exploded")
        return items

    batcher = MicroBatcher(run, BatchingConfig(max_batch_size=1, max_wait_s=0.0, workers=2))

    async def main():
        try:
            return await asyncio.gather(batcher.submit([-1]), batcher.submit([7]), return_exceptions=True)
        finally:
            batcher.close()

    bad, good = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and good[0] == [7]


def test_bad_batching_settings():
    for kwargs in ({"workers": 0}, {"max_batch_size": 0}, {"max_wait_s": -1}):
        with pytest.raises(ValueError, match="workers|max_batch_size|max_wait_s"):
            BatchingConfig(**kwargs)


def test_threads_per_worker_splits_the_core_budget(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert threads_per_worker(2) == 2 and threads_per_worker(3) == 1 and threads_per_worker(8) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert threads_per_worker(2) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads_per_worker(1) == 6
