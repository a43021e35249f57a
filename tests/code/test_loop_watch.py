"""The event-loop watch tells a stall of our own code from one where the loop's thread was off
the CPU: the kernel's own accounts of the loop's thread, read around a real stall."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from serving.telemetry.loop_watch import LoopWatch, SchedClock


def _stall(block) -> logging.LogRecord:
    """Run the watch, stall the loop once with `block`, and return the watch's stall line."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("fraud_bento.stalls")
    logger.addHandler(handler)

    async def run():
        watch = asyncio.create_task(LoopWatch(stall_ms=40).run())
        await asyncio.sleep(0.05)  # a tick or two before the stall
        block()
        await asyncio.sleep(0.05)
        watch.cancel()

    try:
        asyncio.run(run())
    finally:
        logger.removeHandler(handler)
    assert len(records) == 1, [r.getMessage() for r in records]
    return records[0]


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(SchedClock.open() is None, reason="the kernel's schedstat is Linux's")
def test_a_stall_says_whether_the_loop_was_on_a_cpu_or_off_it():
    busy = _stall(lambda: _spin(0.12))  # our own code holding the loop
    assert busy.stall_ms >= 100
    # it wanted the CPU all along: on it, or waiting for it in the run queue
    assert busy.on_cpu_ms + busy.run_queue_ms >= 0.8 * busy.stall_ms
    assert busy.on_cpu_ms >= 20  # and it did run
    blocked = _stall(lambda: time.sleep(0.12))  # a blocking call: the thread sleeps
    assert blocked.stall_ms >= 100
    assert blocked.on_cpu_ms + blocked.run_queue_ms <= 0.5 * blocked.stall_ms
    for record in (busy, blocked):
        assert record.stolen_ms >= 0 and record.gc_ms >= 0
