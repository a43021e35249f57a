"""The worker's event loop under watch: how late it runs (lag of a 10 ms timer), every garbage
collection pause, and a log line for each stall longer than `stall_ms` that says what the GC did
inside it, where the worker's other threads were when the loop came back, and where the kernel
says the loop's thread was meanwhile: on a CPU (our own code), waiting in the run queue (another
process had the core), or neither (blocked, or the hypervisor took the CPU: `stolen_ms`).

A stall is time the loop could not serve a single request: a timer due in 10 ms that fires 200 ms
late means every request queued in those 200 ms waited for nothing. Measured on the running
server, in Prometheus (`fraud_event_loop_lag_seconds`, `fraud_gc_pause_seconds`) and in the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import sys
import threading
import time
from collections import deque

from serving.telemetry import metrics

logger = logging.getLogger("fraud_bento.stalls")
TICK_S = 0.01
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class SchedClock:
    """The calling thread's time on a CPU and in the run queue (the kernel's schedstat, ns) and
    the time the hypervisor took from the CPUs this process may run on (steal in /proc/stat, in
    clock ticks: 10 ms): both read in ~3 µs, each tick. Linux only: `open()` is None elsewhere."""

    def __init__(self, schedstat: int, stat: int, cpus: set[bytes]):
        self._schedstat, self._stat, self._cpus = schedstat, stat, cpus

    @classmethod
    def open(cls) -> SchedClock | None:
        try:
            schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            stat = os.open("/proc/stat", os.O_RDONLY)
        except OSError:
            return None
        return cls(schedstat, stat, {f"cpu{cpu}".encode() for cpu in os.sched_getaffinity(0)})

    def read(self) -> tuple[int, int, int]:
        """(ns on a CPU, ns runnable but waiting, ticks stolen), each a running total."""
        on_cpu, waiting, _ = os.pread(self._schedstat, 128, 0).split()
        stolen = 0
        for line in os.pread(self._stat, 4096, 0).splitlines()[1:]:  # the per-CPU lines lead
            name, *fields = line.split()
            if not name.startswith(b"cpu"):
                break
            if name in self._cpus:
                stolen += int(fields[7])
        return int(on_cpu), int(waiting), stolen

    def close(self) -> None:
        for fd in (self._schedstat, self._stat):
            with contextlib.suppress(OSError):
                os.close(fd)


class LoopWatch:
    def __init__(self, stall_ms: float):
        self._stall_s = stall_ms / 1000
        self._gc_started = 0.0
        self._pauses: deque[tuple[float, float, int, int]] = deque(maxlen=256)  # for stalls
        self._unrecorded: list[tuple[float, int]] = []  # for the metrics
        self._lags: list[float] = []
        self._due = math.inf  # when the next tick should run
        self.stalls = 0

    def lateness(self, now: float) -> float:
        """How far behind the loop is right now: how long past due its next tick is (0: on
        time). Read at the door for every request, while the loop may be deep in a long turn
        whose end would be too late to learn it from."""
        return max(0.0, now - self._due)

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
        clock = SchedClock.open()  # on the loop's own thread: its schedstat is the loop's
        sched = clock.read() if clock else None
        try:
            while True:
                before = time.perf_counter()
                self._due = before + TICK_S
                await asyncio.sleep(TICK_S)
                now = time.perf_counter()
                lag = now - before - TICK_S
                self._lags.append(lag)
                if len(self._lags) >= 100:
                    self.flush()
                previous, sched = sched, clock.read() if clock else None
                if self._stall_s and lag > self._stall_s:
                    self._report(before + TICK_S, now, lag, previous, sched)
        finally:
            gc.callbacks.remove(self._on_gc)
            if clock:
                clock.close()

    def flush(self) -> None:
        lags, self._lags = self._lags, []
        pauses, self._unrecorded = self._unrecorded, []
        metrics.observe_loop(lags, pauses)

    def _report(self, due: float, now: float, lag: float, before=None, after=None) -> None:
        self.stalls += 1
        inside = [p for p in self._pauses if due <= p[0] <= now]
        own = threading.get_ident()
        frames = sys._current_frames()
        others = {
            thread.name: _where(frames[thread.ident])
            for thread in threading.enumerate()
            if thread.ident in frames and thread.ident != own
        }
        kernel = {}
        if before and after:  # over the tick: the stall and the 10 ms the loop slept before it
            on_cpu, waiting, stolen = (
                end - start for start, end in zip(before, after, strict=True)
            )
            kernel = {
                "on_cpu_ms": round(on_cpu / 1e6, 1),
                "run_queue_ms": round(waiting / 1e6, 1),
                "stolen_ms": round(stolen * 1000 / TICKS_PER_S, 1),
            }
        logger.warning(
            "event loop stalled %.0f ms",
            lag * 1000,
            extra={
                "stall_ms": round(lag * 1000, 1),
                **kernel,
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
