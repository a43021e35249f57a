"""Time and peak memory of each stage of a training run: printed as each stage ends, and kept for
the run report (metrics.json, summary.md), so a large table shows where its minutes and its
gigabytes go.

A stage's peak is the process's resident high-water mark during that stage alone: Linux resets
it on request (`/proc/self/clear_refs`); elsewhere it is the process's peak so far.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_peak() -> bool:
    """Start a new high-water mark; False where the system cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _peak_gb(reset: bool) -> float:
    if reset:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


class Stages:
    def __init__(self) -> None:
        self.records: list[dict] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        reset = _reset_peak()
        started = time.monotonic()
        yield
        record = {
            "stage": name,
            "seconds": round(time.monotonic() - started, 1),
            "peak_memory_gb": round(_peak_gb(reset), 2),
        }
        self.records.append(record)
        print(f"{name}: {record['seconds']} s, peak memory {record['peak_memory_gb']} GB")
