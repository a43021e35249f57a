"""The worker's event loop under watch: how late it runs (lag of a 10 ms timer), every garbage
collection pause, and a log line for each stall longer than `stall_ms` that says what the GC did
inside it and where the worker's other threads were when the loop came back.

A stall is time the loop could not serve a single request: a timer due in 10 ms that fires 200 ms
late means every request queued in those 200 ms waited for nothing. Measured on the running
server, in Prometheus (`fraud_event_loop_lag_seconds`, `fraud_gc_pause_seconds`) and in the logs.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
from collections import deque

from serving import metrics

logger = logging.getLogger("fraud_bento.stalls")
TICK_S = 0.01


class LoopWatch:
    def __init__(self, stall_ms: float):
        self._stall_s = stall_ms / 1000
        self._gc_started = 0.0
        self._pauses: deque[tuple[float, float, int, int]] = deque(maxlen=256)  # for stalls
        self._unrecorded: list[tuple[float, int]] = []  # for the metrics
        self._lags: list[float] = []
        self.stalls = 0

    def _on_gc(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            seconds, generation = now - self._gc_started, info["generation"]
            self._pauses.append((now, seconds, generation, info["collected"]))
            self._unrecorded.append((seconds, generation))

    async def run(self) -> None:
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                before = time.perf_counter()
                await asyncio.sleep(TICK_S)
                now = time.perf_counter()
                lag = now - before - TICK_S
                self._lags.append(lag)
                if len(self._lags) >= 100:
                    self.flush()
                if self._stall_s and lag > self._stall_s:
                    self._report(before + TICK_S, now, lag)
        finally:
            gc.callbacks.remove(self._on_gc)

    def flush(self) -> None:
        lags, self._lags = self._lags, []
        pauses, self._unrecorded = self._unrecorded, []
        metrics.observe_loop(lags, pauses)

    def _report(self, due: float, now: float, lag: float) -> None:
        self.stalls += 1
        inside = [p for p in self._pauses if due <= p[0] <= now]
        own = threading.get_ident()
        frames = sys._current_frames()
        others = {
            thread.name: _where(frames[thread.ident])
            for thread in threading.enumerate()
            if thread.ident in frames and thread.ident != own
        }
        logger.warning(
            "event loop stalled %.0f ms",
            lag * 1000,
            extra={
                "stall_ms": round(lag * 1000, 1),
                "gc_ms": round(sum(p[1] for p in inside) * 1000, 1),
                "gc": [
                    {"generation": p[2], "ms": round(p[1] * 1000, 1), "collected": p[3]}
                    for p in inside
                ],
                "threads": others,
            },
        )


def _where(frame) -> str:
    code = frame.f_code
    return f"{code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {code.co_name}"
