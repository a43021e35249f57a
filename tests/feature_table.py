"""A table of precomputed features with no payment columns, for the bring-your-own-features tests.

Fraud depends on an interaction of two sensor-like readings and a flag, so no payment feature
(amounts, customers, terminals, calendar) could explain it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.conftest import REPO_ROOT

FEATURES = ["signal_a", "signal_b", "events_7d", "device_known"]
EXAMPLE = REPO_ROOT / "ops" / "examples" / "feature_table.toml"
CONFIG = EXAMPLE.read_text()


def feature_table(days: int = 60, rows_per_day: int = 250, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    count = days * rows_per_day
    start = pd.Timestamp("2026-01-05")
    seconds = np.sort(rng.uniform(0, days * 86_400, count))
    signal_a = rng.normal(0.0, 1.0, count)
    signal_b = rng.uniform(0.0, 1.0, count)
    events = rng.poisson(4, count)
    known = rng.random(count) < 0.8
    risk = (signal_a > 1.2) & (signal_b > 0.6) & ~known
    label = (risk & (rng.random(count) < 0.9)) | (rng.random(count) < 0.002)
    return pd.DataFrame(
        {
            "event_id": [f"ev-{i:06d}" for i in range(count)],
            "event_time": start + pd.to_timedelta(seconds, unit="s"),
            "signal_a": signal_a,
            "signal_b": signal_b,
            "events_7d": events.astype(np.int64),
            "device_known": known,
            "confirmed_fraud": label.astype(np.int8),
        }
    )
