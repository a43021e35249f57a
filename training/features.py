"""Deterministic feature engineering over a whole table: pure functions from a validated table
to model inputs.

The payment features are defined in model_store/payments.py (their windows and formulas, shared
with the service's online state); here their window aggregates are computed for every row at
once by DuckDB, running the SQL that training/window_sql.py generates from that definition (the
same SQL runs on Spark). The model's schema (each input a
`model_store.contract.Feature`) is saved with the model, so the serving side reads it from the
model store, never from here.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model_store.contract import Feature
from model_store.payments import ENGINEERED_FEATURES, features_from
from settings import ColumnsConfig
from training.window_sql import AGGREGATES, POSITION, aggregates_from, aggregates_query

CHUNK_ROWS = 1_000_000
ENGINE_CONFIG = {
    # Rows come back in any order (each carries its position): DuckDB need not keep the table's.
    "preserve_insertion_order": False,
    # Past this DuckDB spills to disk: 10 M payments took 26.3 s and 3.6 GB peak with it, 24.9 s
    # and 4.0 GB without (the process's peak; the table itself is 1.3 GB of it).
    "memory_limit": "1GB",
    "temp_directory": str(Path(tempfile.gettempdir()) / "fraud-bento-duckdb"),
}


def _engine() -> duckdb.DuckDBPyConnection:
    engine = duckdb.connect(config=ENGINE_CONFIG)
    engine.execute("SET enable_progress_bar = false")  # progress is shown per training stage
    return engine


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


def payment_features(
    table: pd.DataFrame, columns: ColumnsConfig, delay_days: int
) -> dict[str, np.ndarray]:
    """The engineered payment features of each row of a table (in its row order, each in its
    schema's dtype): DuckDB runs the SQL of training/window_sql.py over the table in place, and
    its answer streams through `features_from` a chunk at a time, so memory holds one chunk's
    aggregates, not the table's (and DuckDB spills past its own limit)."""
    features = {
        feature.name: np.empty(len(table), feature.dtype) for feature in ENGINEERED_FEATURES
    }
    frame = table.assign(**{POSITION: np.arange(len(table))})  # copy-on-write: no data copied
    with _engine() as engine:
        engine.register("payments_in", frame)
        answer = engine.sql(aggregates_query("payments_in", columns, delay_days))
        for chunk in answer.to_arrow_reader(CHUNK_ROWS):
            rows = chunk.column(POSITION).to_numpy()
            computed = features_from(
                aggregates_from({name: chunk.column(name).to_numpy() for name in AGGREGATES})
            )
            for name, values in computed.items():
                features[name][rows] = values
    return features


def write_payment_features(
    source: str | Path, out: str | Path, columns: ColumnsConfig, delay_days: int
) -> int:
    """The payment features of a Parquet table of any size, written to Parquet out of core:
    DuckDB reads the file in place (spilling past its memory limit) and its answer streams
    through `features_from` a chunk at a time, so no step holds the table. The rows come in no
    particular order, each with its id, time, customer and label columns, then the features in
    schema order (and `extra_features` as they are). Returns the rows written."""
    if not columns.payment_features:
        raise ValueError("columns.payment_features is off: the table already holds its features")
    keys = [columns.transaction_id, columns.timestamp, columns.customer_id, columns.label]
    rows = 0
    with _engine() as engine, contextlib.ExitStack() as stack:
        payments = engine.read_parquet(str(source))
        roles = columns.roles().items()
        missing = {setting: name for setting, name in roles if name not in payments.columns}
        if missing:
            named = ", ".join(f"{setting} = '{name}'" for setting, name in missing.items())
            raise ValueError(f"{source} has no column for {named}: set those columns")
        payments.create_view("payments_in")
        answer = engine.sql(
            aggregates_query("payments_in", columns, delay_days, keep=keys + columns.extra_features)
        )
        writer = None
        for chunk in answer.to_arrow_reader(CHUNK_ROWS):
            computed = features_from(
                aggregates_from({name: chunk.column(name).to_numpy() for name in AGGREGATES})
            )
            part = pa.table(
                {name: chunk.column(name) for name in keys}
                | {f.name: computed[f.name].astype(f.dtype) for f in ENGINEERED_FEATURES}
                | {name: chunk.column(name) for name in columns.extra_features}
            )
            if writer is None:
                writer = stack.enter_context(pq.ParquetWriter(out, part.schema))
            writer.write_table(part)
            rows += len(part)
    return rows


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
        computed.update(payment_features(table, columns, delay_days))
        keys.insert(2, columns.customer_id)
    for name in columns.extra_features:
        computed[name] = table[name].to_numpy()
    result = table[keys].copy()
    for feature in feature_schema(columns, table):
        result[feature.name] = np.asarray(computed[feature.name]).astype(feature.dtype, copy=False)
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
