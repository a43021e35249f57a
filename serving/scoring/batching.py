"""Adaptive micro-batching shared by every protocol of one worker.

The forest runs one batch at a time. Requests that arrive while it is busy wait in one queue and
are merged into the next batch, up to `max_batch_size` rows; an idle forest takes what is queued
at once (requests parsed in the same turn of the event loop share a batch). Batches therefore
grow with the load by themselves, with no timer: light traffic pays no batching delay, heavy
traffic gets large, cheap batches. Work that has waited longer than `max_latency_ms` is shed with
`Overloaded` (HTTP 503, gRPC RESOURCE_EXHAUSTED) instead of piling up; requests are refused before
that, at the door, while the worker's queue is over its target (serving/scoring/admission.py).

A batch of at most `inline_max_rows` rows is scored on the event loop itself: on the worker's
own core, handing a batch to a thread and back (a wake-up and two GIL hand-overs) costs more than
it saves; measured with one core per worker, 100-row requests went from 954 to 1,088 req/s
scored inline. Larger batches go to one engine thread, so the loop keeps parsing requests while
ONNX Runtime (which releases the GIL) computes a long batch.

BentoML's own dispatcher (CorkDispatcher, behind `@bentoml.api(batchable=True)`) learns a wait
from recent traffic; measured here (docs/performance.md) that wait, learned under a burst, added
tens of milliseconds at light load afterwards and shed requests at a quarter of capacity.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from serving.contract.refusals import Overloaded


@dataclass
class _Job:
    matrix: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class AdaptiveBatcher:
    """`await score(matrix)` from many coroutines; queued matrices are merged into batches."""

    def __init__(
        self,
        score_batch: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_latency_ms: int,
        inline_max_rows: int = 0,
        on_batch: Callable[[int, int], None] = lambda rows, requests: None,
    ):
        self._score_batch = score_batch
        self._max_rows = max_batch_size
        self._max_wait = max_latency_ms / 1000
        self._inline_rows = inline_max_rows
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._scheduled = False
        self._busy = False  # a batch is in the engine thread
        self._engine = ThreadPoolExecutor(1, thread_name_prefix="forest")

    async def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        job = _Job(matrix, loop.create_future())
        self._queue.append(job)
        if not (self._scheduled or self._busy):
            self._scheduled = True
            loop.call_soon(self._drain)
        return await job.future

    def _next_batch(self) -> list[_Job]:
        """The queued jobs that fit in one batch, in arrival order; stale ones are shed."""
        jobs: list[_Job] = []
        rows, now = 0, time.monotonic()
        while self._queue and (not jobs or rows + len(self._queue[0].matrix) <= self._max_rows):
            job = self._queue.popleft()
            if job.future.done():
                continue
            if now - job.enqueued > self._max_wait:
                job.future.set_exception(
                    Overloaded("the scoring queue is over its latency bound; retry shortly")
                )
                continue
            jobs.append(job)
            rows += len(job.matrix)
        return jobs

    def _drain(self) -> None:
        """Score everything queued: small batches inline, a large one in the engine thread
        (which drains again when it is done)."""
        self._scheduled = False
        while self._queue and not self._busy:
            jobs = self._next_batch()
            if not jobs:
                continue
            matrices = [job.matrix for job in jobs]
            stacked = np.concatenate(matrices) if len(matrices) > 1 else matrices[0]
            self._on_batch(len(stacked), len(jobs))
            if len(stacked) <= self._inline_rows:
                try:
                    scores = self._score_batch(stacked)
                except Exception as error:  # noqa: BLE001 - the callers get the engine's error
                    _fail(jobs, error)
                    continue
                _deliver(jobs, matrices, scores)
            else:
                self._busy = True
                asyncio.get_running_loop().create_task(self._in_thread(jobs, matrices, stacked))

    async def _in_thread(self, jobs: list[_Job], matrices: list, stacked: np.ndarray) -> None:
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(self._engine, self._score_batch, stacked)
        except Exception as error:  # noqa: BLE001 - the callers get the engine's error
            _fail(jobs, error)
        else:
            _deliver(jobs, matrices, scores)
        finally:
            self._busy = False
        self._drain()

    def shutdown(self) -> None:
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(Overloaded("the server is shutting down"))
        self._engine.shutdown(wait=False)


def _fail(jobs: list[_Job], error: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)


def _deliver(jobs: list[_Job], matrices: list[np.ndarray], scores: np.ndarray) -> None:
    if len(jobs) == 1:
        if not jobs[0].future.done():
            jobs[0].future.set_result(scores)
        return
    bounds = np.cumsum([len(m) for m in matrices])[:-1]
    for job, part in zip(jobs, np.split(scores, bounds), strict=True):
        if not job.future.done():
            job.future.set_result(part)
