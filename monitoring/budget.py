"""A bound on the rows waiting for a background thread of the monitoring process."""

from __future__ import annotations

import threading
from collections.abc import Callable


class RowBudget:
    """Rows waiting, at most `limit`: past it new rows are refused and `on_drop` counts them, so
    a thread that falls behind sheds work instead of growing without bound."""

    def __init__(self, limit: int, on_drop: Callable[[int], None]):
        self._limit = limit
        self._on_drop = on_drop
        self._waiting = 0
        self._lock = threading.Lock()

    def take(self, rows: int) -> bool:
        """Whether `rows` more may wait (else they are counted as dropped)."""
        with self._lock:
            if self._waiting + rows > self._limit:
                self._on_drop(rows)
                return False
            self._waiting += rows
            return True

    def release(self, rows: int) -> None:
        """`rows` are no longer waiting (done with, or dropped on the way)."""
        with self._lock:
            self._waiting -= rows
