"""whylogs through the adapter, and drift against a training reference on simulated drift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring import whylogs_adapter as profiles
from monitoring.drift import DRIFT, Thresholds, compare
from settings import ColumnsConfig, MonitoringConfig, SimulatorConfig
from training.features import build_features, feature_names
from training.simulate import simulate

COLUMNS = ColumnsConfig()
DRIFT_DAY = 60
WINDOW_ROWS = 1000
CONFIG = MonitoringConfig()
THRESHOLDS = Thresholds(CONFIG.drift_p_value, CONFIG.drift_min_effect)
MONITORED = [name for name in feature_names(COLUMNS) if name not in CONFIG.exclude_features]


def test_adapter_profiles_numeric_and_string_columns():
    frame = pd.DataFrame(
        {"amount": np.linspace(0, 99, 200), "channel": ["web", "pos", "pos", "atm"] * 50}
    )
    view = profiles.profile(frame)
    assert sorted(profiles.columns(view)) == ["amount", "channel"]
    assert profiles.count(view, "channel") == 200
    assert profiles.frequent_strings(view, "channel") == {"pos": 100, "web": 50, "atm": 50}
    assert profiles.quantile_sketch(view, "channel") is None
    sketch = profiles.quantile_sketch(view, "amount")
    assert sketch.get_n() == 200 and abs(sketch.get_quantiles([0.5])[0] - 49.5) < 2
    again = profiles.from_bytes(profiles.to_bytes(view))
    assert profiles.quantile_sketch(profiles.merge([view, again]), "amount").get_n() == 400


def test_string_columns_drift_by_chi_square():
    reference = profiles.profile(pd.DataFrame({"channel": ["web", "pos"] * 500}))
    same = profiles.profile(pd.DataFrame({"channel": ["pos", "web"] * 500}))
    shifted = profiles.profile(pd.DataFrame({"channel": ["web"] * 800 + ["pos"] * 200}))
    (unchanged,) = compare(reference, same, ["channel"], THRESHOLDS)
    (moved,) = compare(reference, shifted, ["channel"], THRESHOLDS)
    assert unchanged.test == "chi_square" and unchanged.category != DRIFT
    assert moved.category == DRIFT and moved.p_value < 1e-6


@pytest.fixture(scope="module")
def drifting() -> tuple[profiles.ProfileView, pd.DataFrame, pd.DataFrame]:
    table = simulate(
        SimulatorConfig(customers=300, terminals=600, days=90, seed=5, drift_start_day=DRIFT_DAY)
    )
    features = build_features(table, COLUMNS, delay_days=7)
    day = (features[COLUMNS.timestamp] - features[COLUMNS.timestamp].min().normalize()).dt.days
    names = feature_names(COLUMNS)
    reference = profiles.profile(features.loc[(day >= 30) & (day < 50), names])
    before = features.loc[(day >= 50) & (day < DRIFT_DAY), names]
    after = features.loc[day >= DRIFT_DAY, names]
    return reference, before, after


def _windows(rows: pd.DataFrame) -> list[pd.DataFrame]:
    return [rows.iloc[i : i + WINDOW_ROWS] for i in range(0, len(rows) - WINDOW_ROWS, WINDOW_ROWS)]


def test_no_false_alarms_before_the_drift(drifting):
    reference, before, _ = drifting
    checks = flagged = 0
    for window in _windows(before):
        report = compare(reference, profiles.profile(window), MONITORED, THRESHOLDS)
        checks += len(report)
        flagged += sum(result.category == DRIFT for result in report)
    assert checks >= 5 * len(MONITORED)
    assert flagged / checks <= 0.02, f"{flagged} false alarms in {checks} feature checks"


def test_shifted_features_are_flagged_within_one_window(drifting):
    reference, _, after = drifting
    first = after.iloc[:WINDOW_ROWS]
    report = {
        r.feature: r for r in compare(reference, profiles.profile(first), MONITORED, THRESHOLDS)
    }
    for feature in ("tx_amount", "tx_during_night", "customer_avg_amount_1d"):
        assert report[feature].category == DRIFT, report[feature]
    unaffected = ("terminal_nb_tx_30d", "customer_nb_tx_30d")
    assert all(report[name].category != DRIFT for name in unaffected)
