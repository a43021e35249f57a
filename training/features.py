"""Deterministic feature engineering over a whole table: pure functions from a validated table
to model inputs.

The payment features are defined in model_store/payments.py (their windows and formulas, shared
with the service's online state); here their window aggregates are computed for every row at
once with grouped rolling windows. The model's schema (each input a
`model_store.contract.Feature`) is saved with the model, so the serving side reads it from the
model store, never from here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_store.contract import Feature
from model_store.payments import (
    ENGINEERED_FEATURES,
    HISTORY_DAYS,
    WINDOWS_DAYS,
    WindowAggregates,
    features_from,
)
from settings import ColumnsConfig


def column_feature(name: str, values: pd.Series) -> Feature:
    """A feature passed as is, typed from its column: flags (only 0/1, or booleans) are int8 in
    [0, 1], other integers int32, the rest float32; never negative in the data means minimum 0,
    and a float column within [0, 1] (a share or a score) also maximum 1."""
    low, high = float(values.min()), float(values.max())
    observed = f"Input column '{name}', passed as is (training data: {low:g} to {high:g})."
    integral = pd.api.types.is_bool_dtype(values) or pd.api.types.is_integer_dtype(values)
    if integral and low >= 0 and high <= 1:
        return Feature(name, "int8", 0, 1, observed)
    int32 = np.iinfo(np.int32)
    if integral and int32.min <= low and high <= int32.max:
        return Feature(name, "int32", 0 if low >= 0 else None, None, observed)
    minimum = 0.0 if low >= 0 else None
    maximum = 1.0 if low >= 0 and high <= 1 else None
    return Feature(name, "float32", minimum, maximum, observed)


def feature_schema(columns: ColumnsConfig, table: pd.DataFrame | None = None) -> list[Feature]:
    """The ordered model inputs: the engineered payment features (unless
    `columns.payment_features` is off), then the `extra_features` columns typed from `table`."""
    engineered = list(ENGINEERED_FEATURES) if columns.payment_features else []
    clashes = {feature.name for feature in engineered} & set(columns.extra_features)
    if clashes:
        raise ValueError(
            f"columns.extra_features: {', '.join(sorted(clashes))} is the name of an engineered "
            "payment feature; rename that column in the table"
        )
    if columns.extra_features and table is None:
        raise ValueError("the extra features' types come from the table: pass it")
    return engineered + [column_feature(name, table[name]) for name in columns.extra_features]


def feature_names(columns: ColumnsConfig) -> list[str]:
    engineered = ENGINEERED_FEATURES if columns.payment_features else ()
    return [feature.name for feature in engineered] + list(columns.extra_features)


def _past_window(
    keys: np.ndarray, values: np.ndarray, timestamps: np.ndarray, days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of `values` over each row's key's rows in [t - days, t), for rows in time
    order (the result in the same order)."""
    order = pd.Series(keys).sort_values(kind="stable").index.to_numpy()  # key, then time
    series = pd.Series(values[order], index=timestamps[order])
    rolled = series.groupby(keys[order], sort=True).rolling(f"{days}D", closed="left")
    count, total = np.empty(len(keys)), np.empty(len(keys))
    count[order] = rolled.count().fillna(0.0).to_numpy()
    total[order] = rolled.sum().fillna(0.0).to_numpy()
    return count, total


def window_aggregates(
    table: pd.DataFrame, columns: ColumnsConfig, delay_days: int
) -> WindowAggregates:
    """The payment features' aggregates for a table sorted by (timestamp, transaction id)."""
    timestamps = pd.DatetimeIndex(table[columns.timestamp])
    amount = table[columns.amount].to_numpy(dtype=float)
    customers = table[columns.customer_id].to_numpy()
    terminals = table[columns.terminal_id].to_numpy()
    aggregates = WindowAggregates(
        amount=amount,
        weekday=timestamps.day_of_week.to_numpy(dtype=float),
        hour=timestamps.hour.to_numpy(dtype=float),
    )
    for days in WINDOWS_DAYS:
        count, total = _past_window(customers, amount, timestamps, days)
        aggregates.customer_count[days], aggregates.customer_sum[days] = count, total
    _, aggregates.customer_sum_squares = _past_window(
        customers, amount**2, timestamps, HISTORY_DAYS
    )
    pairs = table.groupby([columns.customer_id, columns.terminal_id], sort=False).ngroup()
    aggregates.pair_count, _ = _past_window(pairs.to_numpy(), amount, timestamps, HISTORY_DAYS)
    labels = table[columns.label].to_numpy(dtype=float)
    known_count, known_fraud = _past_window(terminals, labels, timestamps, delay_days)
    for days in WINDOWS_DAYS:
        count, fraud = _past_window(terminals, labels, timestamps, delay_days + days)
        aggregates.terminal_count[days] = count - known_count
        aggregates.terminal_fraud[days] = fraud - known_fraud
    return aggregates


def build_features(table: pd.DataFrame, columns: ColumnsConfig, delay_days: int) -> pd.DataFrame:
    """Features for every row of a validated table.

    Returns one row per transaction sorted by (timestamp, transaction id): the id, timestamp,
    customer (with payment features) and label columns, then the features in schema order. The
    result does not depend on the order of the input rows.
    """
    table = table.sort_values([columns.timestamp, columns.transaction_id]).reset_index(drop=True)
    computed: dict[str, np.ndarray] = {}
    keys = [columns.transaction_id, columns.timestamp, columns.label]
    if columns.payment_features:
        computed.update(features_from(window_aggregates(table, columns, delay_days)))
        keys.insert(2, columns.customer_id)
    for name in columns.extra_features:
        computed[name] = table[name].to_numpy()
    result = table[keys].copy()
    for feature in feature_schema(columns, table):
        result[feature.name] = np.asarray(computed[feature.name]).astype(feature.dtype)
    return result


def feature_matrix(features: pd.DataFrame, columns: ColumnsConfig) -> np.ndarray:
    """The model's input matrix: float32 in schema order."""
    return features[feature_names(columns)].to_numpy(dtype=np.float32)


def request_rows(features: pd.DataFrame, columns: ColumnsConfig) -> list[dict]:
    """Feature rows as a client sends them to /predict: ints for integer features, else floats."""
    names = feature_names(columns)
    integral = {name for name in names if pd.api.types.is_integer_dtype(features[name])}
    return [
        {name: int(row[name]) if name in integral else float(row[name]) for name in names}
        for row in features.to_dict("records")
    ]
