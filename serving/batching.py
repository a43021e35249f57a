"""Adaptive micro-batching shared by every protocol of one worker.

The dispatcher is BentoML's own (`CorkDispatcher`, the one behind `@bentoml.api(batchable=True)`):
it learns the forest's cost per row and per call, and releases a batch when waiting longer would
cost more than it saves. We hold one instance per worker so that HTTP /predict, the Open
Inference Protocol over HTTP and over gRPC all feed the same queue and the same forest calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml.exceptions import ServiceUnavailable


class Overloaded(ServiceUnavailable):
    """The batch queue could not meet its latency bound: the caller should retry (HTTP 503)."""


def _overloaded() -> np.ndarray:
    raise Overloaded("the scoring queue is over its latency bound; retry shortly")


class AdaptiveBatcher:
    """`await score(matrix)` from many coroutines; matrices are merged into shared batches."""

    def __init__(
        self,
        score_batch: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_latency_ms: int,
        on_batch: Callable[[int, int], None] = lambda rows, requests: None,
    ):
        self._score_batch = score_batch
        self._on_batch = on_batch
        self._dispatcher = CorkDispatcher(
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            fallback=_overloaded,
            get_batch_size=lambda matrix: matrix.shape[0],
            batch_dim=(0, 0),
        )
        self._call = self._dispatcher(self._run)

    async def _run(self, matrices: Sequence[np.ndarray]) -> list[np.ndarray]:
        stacked = np.concatenate(matrices) if len(matrices) > 1 else matrices[0]
        self._on_batch(stacked.shape[0], len(matrices))
        scores = await anyio.to_thread.run_sync(self._score_batch, stacked)
        bounds = np.cumsum([m.shape[0] for m in matrices])[:-1]
        return np.split(scores, bounds)

    async def score(self, matrix: np.ndarray) -> np.ndarray:
        return await self._call(matrix)

    def shutdown(self) -> None:
        self._dispatcher.shutdown()
