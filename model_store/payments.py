"""The payment features' one definition: which windows are aggregated, and how each feature
follows from those aggregates.

Two engines compute the aggregates: training over a whole table (training/features.py, window
functions in SQL on DuckDB or Spark) and the service one payment at a time from online state
(serving/payments/payment_state.py). Both hand them to `features_from`, so every formula below
is written once; the window semantics they share are stated here and proven equal by the parity test
(tests/service/test_payments.py):
- a window of `days` at time t holds the key's payments in [t - days, t): strictly earlier, so
  payments at the same instant do not see each other;
- a terminal's windows end `delay_days` before t, [t - delay - days, t - delay), because its
  fraud labels are known only that long after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model_store.contract import Feature

WINDOWS_DAYS = (1, 7, 30)
NIGHT_END_HOUR = 6
HISTORY_DAYS = 30
DAY_SECONDS = 86_400.0
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday 0): a time's weekday from its days


def state_horizon_days(delay_days: int) -> int:
    """How far back any window reaches: older payments can be forgotten."""
    return max(HISTORY_DAYS, max(WINDOWS_DAYS) + delay_days)


def _engineered_features() -> list[Feature]:
    features = [
        Feature("tx_amount", "float32", 0.0, None, "Transaction amount."),
        Feature("tx_during_weekend", "int8", 0, 1, "1 on Saturday or Sunday."),
        Feature("tx_during_night", "int8", 0, 1, f"1 before {NIGHT_END_HOUR}:00."),
    ]
    for days in WINDOWS_DAYS:
        features += [
            Feature(
                f"customer_nb_tx_{days}d",
                "int32",
                0,
                None,
                f"The customer's transactions in the previous {days} days.",
            ),
            Feature(
                f"customer_avg_amount_{days}d",
                "float32",
                0.0,
                None,
                f"The customer's mean amount in the previous {days} days (0 if none).",
            ),
        ]
    features += [
        Feature(
            f"customer_amount_ratio_{HISTORY_DAYS}d",
            "float32",
            0.0,
            None,
            f"Amount over the customer's {HISTORY_DAYS}-day mean (1 without history).",
        ),
        Feature(
            f"customer_amount_zscore_{HISTORY_DAYS}d",
            "float32",
            None,
            None,
            f"Amount in standard deviations from the customer's {HISTORY_DAYS}-day mean "
            "(0 with fewer than two past payments).",
        ),
        Feature(
            f"customer_terminal_new_{HISTORY_DAYS}d",
            "int8",
            0,
            1,
            f"1 if the customer has not paid at this terminal in the previous {HISTORY_DAYS} days.",
        ),
    ]
    for days in WINDOWS_DAYS:
        features += [
            Feature(
                f"terminal_nb_tx_{days}d",
                "int32",
                0,
                None,
                f"The terminal's transactions in the {days} days before the label delay.",
            ),
            Feature(
                f"terminal_risk_{days}d",
                "float32",
                0.0,
                1.0,
                f"Share of fraud at the terminal in the {days} days before the label delay.",
            ),
        ]
    return features


ENGINEERED_FEATURES: tuple[Feature, ...] = tuple(_engineered_features())


@dataclass
class WindowAggregates:
    """For each of n payments (arrays of length n, float64), what its features are made of."""

    amount: np.ndarray
    weekday: np.ndarray  # Monday 0
    hour: np.ndarray
    customer_count: dict[int, np.ndarray] = field(default_factory=dict)  # by window days
    customer_sum: dict[int, np.ndarray] = field(default_factory=dict)
    customer_sum_squares: np.ndarray | None = None  # over HISTORY_DAYS
    pair_count: np.ndarray | None = None  # the customer at this terminal, HISTORY_DAYS
    terminal_count: dict[int, np.ndarray] = field(default_factory=dict)  # delayed windows
    terminal_fraud: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> WindowAggregates:
        """All zeros (empty windows), for n payments."""
        by_window = [{days: np.zeros(n) for days in WINDOWS_DAYS} for _ in range(4)]
        return cls(
            *(np.zeros(n) for _ in range(3)),
            customer_count=by_window[0],
            customer_sum=by_window[1],
            customer_sum_squares=np.zeros(n),
            pair_count=np.zeros(n),
            terminal_count=by_window[2],
            terminal_fraud=by_window[3],
        )


def _ratio(numerator: np.ndarray, denominator: np.ndarray, default: float) -> np.ndarray:
    out = np.full_like(numerator, default, dtype=float)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def features_from(aggregates: WindowAggregates) -> dict[str, np.ndarray]:
    """The engineered features by name (float64 arrays), from their window aggregates."""
    a = aggregates
    out = {
        "tx_amount": a.amount,
        "tx_during_weekend": (a.weekday >= 5).astype(float),
        "tx_during_night": (a.hour < NIGHT_END_HOUR).astype(float),
    }
    for days in WINDOWS_DAYS:
        out[f"customer_nb_tx_{days}d"] = a.customer_count[days]
        out[f"customer_avg_amount_{days}d"] = _ratio(
            a.customer_sum[days], a.customer_count[days], 0
        )
    count, mean = a.customer_count[HISTORY_DAYS], out[f"customer_avg_amount_{HISTORY_DAYS}d"]
    out[f"customer_amount_ratio_{HISTORY_DAYS}d"] = _ratio(a.amount, mean, 1.0)
    variance = _ratio(a.customer_sum_squares - mean * mean * count, count - 1, 0.0)
    std = np.sqrt(np.clip(variance, 0.0, None))
    out[f"customer_amount_zscore_{HISTORY_DAYS}d"] = _ratio(a.amount - mean, std, 0.0)
    out[f"customer_terminal_new_{HISTORY_DAYS}d"] = (a.pair_count == 0).astype(float)
    for days in WINDOWS_DAYS:
        out[f"terminal_nb_tx_{days}d"] = a.terminal_count[days]
        out[f"terminal_risk_{days}d"] = _ratio(a.terminal_fraud[days], a.terminal_count[days], 0)
    return out
