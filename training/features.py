"""Deterministic feature engineering: pure functions from a validated table to model inputs.

The ordered feature list below is the one definition of the model's inputs (each a
`model_store.contract.Feature`). It is saved with the model, so the serving side reads it from the
model store, never from here.
Every window looks only at strictly earlier transactions; terminal risk windows also skip the
label delay, because a terminal's fraud labels are known only that long after the fact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from model_store.contract import Feature
from settings import ColumnsConfig

WINDOWS_DAYS = (1, 7, 30)
NIGHT_END_HOUR = 6
HISTORY_DAYS = 30


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
    table: pd.DataFrame, key: str, value: str, days: int, columns: ColumnsConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of `value` over the key's transactions in [t - days, t), in table order.

    `table` must be sorted by (key, timestamp, transaction id).
    """
    series = pd.Series(table[value].to_numpy(dtype=float), index=table[columns.timestamp])
    rolled = series.groupby(table[key].to_numpy(), sort=True).rolling(f"{days}D", closed="left")
    return rolled.count().fillna(0.0).to_numpy(), rolled.sum().fillna(0.0).to_numpy()


def _customer_features(table: pd.DataFrame, columns: ColumnsConfig) -> dict[str, pd.Series]:
    table = table.sort_values([columns.customer_id, columns.timestamp, columns.transaction_id])
    out: dict[str, np.ndarray | pd.Series] = {}
    for days in WINDOWS_DAYS:
        count, total = _past_window(table, columns.customer_id, columns.amount, days, columns)
        out[f"customer_nb_tx_{days}d"] = count
        out[f"customer_avg_amount_{days}d"] = np.divide(
            total, count, out=np.zeros_like(total), where=count > 0
        )
    amount = table[columns.amount].to_numpy(dtype=float)
    count = out[f"customer_nb_tx_{HISTORY_DAYS}d"]
    mean = out[f"customer_avg_amount_{HISTORY_DAYS}d"]
    squares = table.assign(_square=amount**2)
    _, total_squares = _past_window(squares, columns.customer_id, "_square", HISTORY_DAYS, columns)
    out[f"customer_amount_ratio_{HISTORY_DAYS}d"] = np.divide(
        amount, mean, out=np.ones_like(amount), where=mean > 0
    )
    variance = np.divide(
        total_squares - mean * mean * count, count - 1, out=np.zeros_like(total), where=count > 1
    )
    std = np.sqrt(np.clip(variance, 0.0, None))
    out[f"customer_amount_zscore_{HISTORY_DAYS}d"] = np.divide(
        amount - mean, std, out=np.zeros_like(amount), where=std > 0
    )
    pair = table.groupby([columns.customer_id, columns.terminal_id], sort=False).ngroup()
    pairs = table.assign(_pair=pair.to_numpy()).sort_values(
        ["_pair", columns.timestamp, columns.transaction_id]
    )
    seen, _ = _past_window(pairs, "_pair", columns.amount, HISTORY_DAYS, columns)
    out[f"customer_terminal_new_{HISTORY_DAYS}d"] = pd.Series(
        (seen == 0).astype(float), index=pairs.index
    ).reindex(table.index)
    return {
        name: values if isinstance(values, pd.Series) else pd.Series(values, index=table.index)
        for name, values in out.items()
    }


def _terminal_features(
    table: pd.DataFrame, columns: ColumnsConfig, delay_days: int
) -> dict[str, pd.Series]:
    table = table.sort_values([columns.terminal_id, columns.timestamp, columns.transaction_id])
    key, label = columns.terminal_id, columns.label
    known_count, known_fraud = _past_window(table, key, label, delay_days, columns)
    out: dict[str, pd.Series] = {}
    for days in WINDOWS_DAYS:
        count, fraud = _past_window(table, key, label, delay_days + days, columns)
        count, fraud = count - known_count, fraud - known_fraud
        out[f"terminal_nb_tx_{days}d"] = count
        out[f"terminal_risk_{days}d"] = np.divide(
            fraud, count, out=np.zeros_like(fraud), where=count > 0
        )
    return {name: pd.Series(values, index=table.index) for name, values in out.items()}


def build_features(table: pd.DataFrame, columns: ColumnsConfig, delay_days: int) -> pd.DataFrame:
    """Features for every row of a validated table.

    Returns one row per transaction sorted by (timestamp, transaction id): the id, timestamp,
    customer (with payment features) and label columns, then the features in schema order. The
    result does not depend on the order of the input rows.
    """
    table = table.sort_values([columns.timestamp, columns.transaction_id]).reset_index(drop=True)
    computed: dict[str, pd.Series | np.ndarray] = {}
    keys = [columns.transaction_id, columns.timestamp, columns.label]
    if columns.payment_features:
        timestamp = table[columns.timestamp]
        computed["tx_amount"] = table[columns.amount].to_numpy(dtype=float)
        computed["tx_during_weekend"] = (timestamp.dt.day_of_week >= 5).to_numpy()
        computed["tx_during_night"] = (timestamp.dt.hour < NIGHT_END_HOUR).to_numpy()
        computed.update(_customer_features(table, columns))
        computed.update(_terminal_features(table, columns, delay_days))
        keys.insert(2, columns.customer_id)
    for name in columns.extra_features:
        computed[name] = table[name].to_numpy()
    result = table[keys].copy()
    for feature in feature_schema(columns, table):
        values = computed[feature.name]
        if isinstance(values, pd.Series):
            values = values.sort_index().to_numpy()
        result[feature.name] = np.asarray(values).astype(feature.dtype)
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
