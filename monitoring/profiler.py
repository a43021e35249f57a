"""Request profiling off the request path, in rolling windows, with drift against the reference.

The scorer hands each scored batch to `submit`, which only appends to a bounded queue (and drops
the sample, counted, when the queue is full: profiling never slows or fails a request). Once a
second a background thread profiles what accumulated in one whylogs call: a call costs ~10 ms
whatever its size plus ~27 us per row, and it holds the GIL, so profiling every arrival as it
comes would take a core from the event loop. Past `max_rows_per_s` (with a burst allowance) the
rows are sampled uniformly: distributions stay unbiased and the cost bounded. Each window is
written as a whylogs binary profile and compared with the model's reference profile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring import SCORE_COLUMN
from monitoring import whylogs_adapter as profiles
from monitoring.budget import RowBudget
from monitoring.drift import DRIFT, FeatureDrift, Thresholds, compare

logger = logging.getLogger("fraud_bento.monitoring")


PROFILE_EVERY_S = 1.0
BURST_S = 2.0


OK, TOO_FEW_ROWS = "ok", "too_few_rows"
WINDOW_FILE = "window-{start}-{end}-{replica}.bin"


def window_bounds(now: float, window_s: float) -> tuple[float, float]:
    """The clock-aligned window holding `now`: every replica's windows line up, so the fleet's
    profile of a window is the merge of each replica's file for it."""
    start = (now // window_s) * window_s
    return start, start + window_s


@dataclass(frozen=True)
class DriftReport:
    window_start: float
    window_end: float
    rows: int
    features: list[FeatureDrift]
    scored_rows: int
    min_rows: int
    replicas: int = 1

    @property
    def judged(self) -> bool:
        return self.rows >= self.min_rows

    @property
    def drift_detected(self) -> bool:
        return self.judged and any(feature.category == DRIFT for feature in self.features)

    def as_dict(self) -> dict:
        verdict = {"status": OK}
        if not self.judged:
            verdict = {
                "status": TOO_FEW_ROWS,
                "reason": f"{self.rows} profiled rows, fewer than the {self.min_rows} a drift "
                "of drift_min_effect needs to be significant at drift_p_value: not judged",
            }
        return {
            **verdict,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "rows": self.rows,
            "scored_rows": self.scored_rows,
            "min_rows": self.min_rows,
            "replicas": self.replicas,
            "drift_detected": self.drift_detected,
            "drifted_features": [
                f.feature for f in self.features if f.category == DRIFT and self.judged
            ],
            "features": [feature.as_dict() for feature in self.features] if self.judged else [],
        }


def drift_report(
    reference: profiles.ProfileView,
    window: profiles.ProfileView,
    bounds: tuple[float, float],
    rows: int,
    scored: int,
    monitored: list[str],
    thresholds: Thresholds,
    replicas: int = 1,
) -> DriftReport:
    judged = rows >= thresholds.min_rows
    features = compare(reference, window, monitored, thresholds) if judged else []
    return DriftReport(*bounds, rows, features, scored, thresholds.min_rows, replicas)


def fleet_report(
    reference: profiles.ProfileView,
    directory: Path,
    window_s: float,
    monitored: list[str],
    thresholds: Thresholds,
    now: float | None = None,
) -> DriftReport | None:
    """Drift of the latest closed window over every replica that wrote a profile for it into
    the shared `directory` (None when none did)."""
    start, _ = window_bounds(time.time() if now is None else now, window_s)
    files = sorted(directory.glob(f"window-{int(start - window_s)}-{int(start)}-*.bin"))
    if not files:
        return None
    views = [profiles.from_bytes(path.read_bytes()) for path in files]
    merged = profiles.merge(views)
    rows = max((profiles.count(merged, name) for name in profiles.columns(merged)), default=0)
    return drift_report(
        reference, merged, (start - window_s, start), rows, rows, monitored, thresholds, len(files)
    )


class RequestProfiler:
    def __init__(
        self,
        *,
        reference: profiles.ProfileView | None,
        features: list[str],
        monitored: list[str],
        directory: Path,
        window_s: float,
        thresholds: Thresholds,
        max_queued_rows: int,
        max_rows_per_s: float,
        on_report: Callable[[DriftReport], None] = lambda report: None,
        on_drop: Callable[[int], None] = lambda rows: None,
        on_profiled: Callable[[int], None] = lambda rows: None,
    ):
        self._reference = reference
        self._features = features
        self._monitored = monitored
        self._directory = directory
        self.window_s = window_s
        self._thresholds = thresholds
        self._rows_per_s = max_rows_per_s
        self._allowance = max_rows_per_s * BURST_S
        self._last_profiled = time.monotonic()
        self._rng = np.random.default_rng()
        self._on_report = on_report
        self._on_profiled = on_profiled
        self._budget = RowBudget(max_queued_rows, on_drop)
        self._queue: queue.Queue = queue.Queue()
        self._window: profiles.ProfileView | None = None
        self._window_rows = 0
        self._window_scored = 0
        self._window_bounds = window_bounds(time.time(), window_s)
        self._replica = f"{socket.gethostname()}-{os.getpid()}"
        self.latest: DriftReport | None = None
        self.available = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-profiler", daemon=True)
        self._thread.start()

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    def submit(self, matrix: np.ndarray, scores: np.ndarray) -> None:
        if self._budget.take(len(matrix)):
            self._queue.put((time.time(), matrix, scores))

    def _drain(self) -> list[tuple[float, pd.DataFrame]]:
        """What arrived since the last call, as one frame per window it arrived in (rows
        that came after a window's end belong to the next one, even if drained together)."""
        parts = []
        with contextlib.suppress(queue.Empty):
            while True:
                parts.append(self._queue.get_nowait())
        if not parts:
            return []
        self._budget.release(sum(len(matrix) for _, matrix, _ in parts))
        frames = []
        for start, group in groupby(parts, key=lambda p: window_bounds(p[0], self.window_s)[0]):
            group = list(group)
            frame = pd.DataFrame(np.concatenate([m for _, m, _ in group]), columns=self._features)
            frame[SCORE_COLUMN] = np.concatenate([s for _, _, s in group]).astype(np.float64)
            frames.append((start, frame))
        return frames

    def _sample(self, frame: pd.DataFrame) -> pd.DataFrame:
        now = time.monotonic()
        self._allowance = min(
            self._rows_per_s * BURST_S,
            self._allowance + (now - self._last_profiled) * self._rows_per_s,
        )
        self._last_profiled = now
        keep = min(len(frame), int(self._allowance))
        self._allowance -= keep
        if keep == len(frame):
            return frame
        return frame.iloc[np.sort(self._rng.choice(len(frame), keep, replace=False))]

    def _profile_pending(self) -> None:
        for start, frame in self._drain():
            if self._window is not None and start != self._window_bounds[0]:
                self._close_window()
            if self._window is None:
                self._window_bounds = (start, start + self.window_s)
            self._add(frame)

    def _add(self, frame: pd.DataFrame) -> None:
        self._window_scored += len(frame)
        sample = self._sample(frame)
        if len(sample):
            view = profiles.profile(sample)
            self._window = view if self._window is None else self._window.merge(view)
            self._window_rows += len(sample)
            self._on_profiled(len(sample))

    def _run(self) -> None:
        while not self._stop.wait(PROFILE_EVERY_S):
            self._profile_pending()
            if time.time() >= self._window_bounds[1]:
                self._close_window()

    def _close_window(self) -> None:
        bounds = self._window_bounds
        window, rows, scored = self._window, self._window_rows, self._window_scored
        self._window, self._window_rows, self._window_scored = None, 0, 0
        self._window_bounds = window_bounds(time.time(), self.window_s)
        if window is None:
            return
        name = WINDOW_FILE.format(start=int(bounds[0]), end=int(bounds[1]), replica=self._replica)
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            (self._directory / name).write_bytes(profiles.to_bytes(window))
            self.available = True
        except OSError as error:
            self.available = False
            logger.warning("profiling unavailable: cannot write %s: %s", self._directory, error)
        if self._reference is None:
            return
        report = drift_report(
            self._reference, window, bounds, rows, scored, self._monitored, self._thresholds
        )
        self.latest = report
        self._on_report(report)

    def fleet_report(self) -> DriftReport | None:
        """The latest closed window over every replica writing to this profile directory."""
        if self._reference is None:
            return None
        return fleet_report(
            self._reference, self._directory, self.window_s, self._monitored, self._thresholds
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._profile_pending()
        self._close_window()
