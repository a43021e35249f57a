"""The background request profiler: windows, sampling past its row budget, dropping when full."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring import SCORE_COLUMN
from monitoring import whylogs_adapter as profiles
from monitoring.drift import Thresholds
from monitoring.profiler import BURST_S, RequestProfiler

FEATURES = ["amount", "count"]


def _profiler(tmp_path, **overrides) -> RequestProfiler:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rng.random((2000, 2)), columns=FEATURES)
    reference[SCORE_COLUMN] = rng.random(2000)
    options = dict(
        reference=profiles.profile(reference),
        features=FEATURES,
        monitored=[*FEATURES, SCORE_COLUMN],
        directory=tmp_path,
        window_s=3600,
        thresholds=Thresholds(0.01, 0.1),
        max_queued_rows=100_000,
        max_rows_per_s=100,
    )
    return RequestProfiler(**{**options, **overrides})


def test_past_the_budget_rows_are_sampled_and_the_window_says_so(tmp_path):
    profiler = _profiler(tmp_path)
    rng = np.random.default_rng(1)
    for _ in range(50):
        profiler.submit(rng.random((100, 2)), rng.random(100))
    profiler.close()
    report = profiler.latest
    assert report.scored_rows == 5000
    assert 100 * BURST_S <= report.rows < 5000 * 0.2  # the burst allowance, and little more
    assert not report.drift_detected  # a uniform sample of the same distribution
    assert len(list(tmp_path.glob("window-*.bin"))) == 1


def test_a_full_queue_drops_samples_and_counts_them(tmp_path):
    dropped = []
    profiler = _profiler(tmp_path, max_queued_rows=150, on_drop=dropped.append)
    profiler.submit(np.zeros((100, 2)), np.zeros(100))
    profiler.submit(np.zeros((100, 2)), np.zeros(100))
    profiler.close()
    assert dropped == [100]
    assert profiler.latest.scored_rows == 100


def test_rows_after_a_window_end_go_to_the_next_window_even_when_drained_together(
    tmp_path, monkeypatch
):
    reports = []
    profiler = _profiler(tmp_path, window_s=10, max_rows_per_s=100_000, on_report=reports.append)
    profiler._stop.set()  # drive the profiler by hand: no background ticks
    profiler._thread.join()
    rng = np.random.default_rng(2)
    clock = iter([1_000_009.5, 1_000_010.2])  # just before and just after a window boundary
    monkeypatch.setattr("monitoring.profiler.time.time", lambda: next(clock, 1_000_015.0))
    profiler.submit(rng.random((300, 2)), rng.random(300))
    profiler.submit(rng.random((400, 2)), rng.random(400))
    profiler._profile_pending()  # both drained in one tick
    (first,) = reports
    assert (first.window_start, first.window_end, first.rows) == (1_000_000, 1_000_010, 300)
    profiler._close_window()
    assert reports[1].window_start == 1_000_010 and reports[1].rows == 400
    names = sorted(path.name.split("-")[1] for path in tmp_path.glob("window-*.bin"))
    assert names == ["1000000", "1000010"]
