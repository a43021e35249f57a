"""The background request profiler: windows, sampling past its row budget, dropping when full."""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitoring import whylogs_adapter as profiles
from monitoring.drift import SCORE_COLUMN, Thresholds
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
