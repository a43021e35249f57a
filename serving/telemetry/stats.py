"""The in-worker summary behind GET /stats: counts since start and percentiles over the latest
requests of this worker."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np


class Stats:
    """Counts since start and percentiles over the latest requests of this worker."""

    def __init__(self, window: int):
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.rows = 0
        self.frauds = 0
        self._latencies: deque[float] = deque(maxlen=window)
        self._batches: deque[int] = deque(maxlen=window)

    def record_request(self, protocol: str, rows: int, frauds: int, seconds: float) -> None:
        with self._lock:
            self.requests[protocol] += 1
            self.rows += rows
            self.frauds += frauds
            self._latencies.append(seconds)

    def record_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def record_batch(self, rows: int) -> None:
        with self._lock:
            self._batches.append(rows)

    def snapshot(self) -> dict:
        with self._lock:
            latencies = np.array(self._latencies) * 1000
            batches = np.array(self._batches)
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "requests": dict(self.requests),
                "requests_total": sum(self.requests.values()),
                "rows": self.rows,
                "errors": dict(self.errors),
                "fraud_rate": self.frauds / self.rows if self.rows else 0.0,
                "latency_ms": _percentiles(latencies),
                "batch_rows": {
                    **_percentiles(batches),
                    "batches": len(batches),
                    "mean": float(batches.mean()) if len(batches) else 0.0,
                    "max": int(batches.max()) if len(batches) else 0,
                },
            }


STATS = Stats(window=10_000)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}
