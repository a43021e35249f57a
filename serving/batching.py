"""Adaptive micro-batching shared by every protocol of one worker.

The forest runs one batch at a time. Requests that arrive while it is busy wait in one queue and
are merged into the next batch, up to `max_batch_size` rows; an idle forest takes a request at
once. Batches therefore grow with the load by themselves, with no timer: light traffic pays no
batching delay, heavy traffic gets large, cheap batches. Work that has waited longer than
`max_latency_ms` is shed with `Overloaded` (HTTP 503, gRPC UNAVAILABLE) instead of piling up.

BentoML's own dispatcher (CorkDispatcher, behind `@bentoml.api(batchable=True)`) learns a wait
from recent traffic; measured here (README, Performance) that wait, learned under a burst, added
tens of milliseconds at light load afterwards and shed requests at a quarter of capacity.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import numpy as np
from bentoml.exceptions import ServiceUnavailable


class Overloaded(ServiceUnavailable):
    """The request waited past the latency bound: the caller should retry (HTTP 503)."""


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
        on_batch: Callable[[int, int], None] = lambda rows, requests: None,
    ):
        self._score_batch = score_batch
        self._max_rows = max_batch_size
        self._max_wait = max_latency_ms / 1000
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._pending: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def score(self, matrix: np.ndarray) -> np.ndarray:
        if self._worker is None:
            self._pending = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._serve())
        job = _Job(matrix, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._pending.set()
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

    async def _serve(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            while self._queue:
                jobs = self._next_batch()
                if jobs:
                    await self._run(jobs)

    async def _run(self, jobs: list[_Job]) -> None:
        matrices = [job.matrix for job in jobs]
        stacked = np.concatenate(matrices) if len(matrices) > 1 else matrices[0]
        self._on_batch(len(stacked), len(jobs))
        try:
            scores = await anyio.to_thread.run_sync(self._score_batch, stacked)
        except Exception as error:  # noqa: BLE001 - the callers get the engine's error
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        bounds = np.cumsum([len(m) for m in matrices])[:-1]
        for job, part in zip(jobs, np.split(scores, bounds), strict=True):
            if not job.future.done():
                job.future.set_result(part)

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(Overloaded("the server is shutting down"))
