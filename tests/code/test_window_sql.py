"""The SQL window engine (training/window_sql.py) on DuckDB against the pandas grouped rolling
windows it replaced (their reference kept here as an independent oracle), on Spark (local mode)
against DuckDB, and out of core (Parquet to Parquet) against in memory: every feature equal
within float32 tolerance, on simulated tables, also in column names that need quoting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from model_store.payments import HISTORY_DAYS, WINDOWS_DAYS, WindowAggregates, features_from
from settings import ColumnsConfig, SimulatorConfig
from training.__main__ import main as training_cli
from training.data import write_table
from training.features import build_features, payment_features
from training.simulate import simulate
from training.spark_features import spark_payment_features
from training.window_sql import POSITION

DELAY = 7


def main(argv: list[str], columns: ColumnsConfig | None = None) -> int:
    """`python -m training ARGV`, in this process, with `columns` (through the environment)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (columns.model_dump() if columns else {}).items():
            if isinstance(value, str):
                patch.setenv(f"FRAUD_COLUMNS__{name.upper()}", value)
        return training_cli(argv)


def _past_window(keys, values, timestamps, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of `values` over each row's key's rows in [t - days, t), for rows in time
    order (pandas' grouped rolling windows, closed on the left)."""
    order = pd.Series(keys).sort_values(kind="stable").index.to_numpy()  # key, then time
    series = pd.Series(values[order], index=timestamps[order])
    rolled = series.groupby(keys[order], sort=True).rolling(f"{days}D", closed="left")
    count, total = np.empty(len(keys)), np.empty(len(keys))
    count[order] = rolled.count().fillna(0.0).to_numpy()
    total[order] = rolled.sum().fillna(0.0).to_numpy()
    return count, total


def pandas_aggregates(table: pd.DataFrame, columns: ColumnsConfig, delay: int) -> WindowAggregates:
    """The training engine before the SQL one, for a table sorted by time."""
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
    known_count, known_fraud = _past_window(terminals, labels, timestamps, delay)
    for days in WINDOWS_DAYS:
        count, fraud = _past_window(terminals, labels, timestamps, delay + days)
        aggregates.terminal_count[days] = count - known_count
        aggregates.terminal_fraud[days] = fraud - known_fraud
    return aggregates


ODD_NAMES = ColumnsConfig(
    transaction_id="payment id",
    timestamp="created at",
    customer_id='card "number"',
    terminal_id="merchant`terminal",
    amount="amount (EUR)",
    label="is fraud?",
)


@pytest.mark.parametrize("columns", [ColumnsConfig(), ODD_NAMES], ids=["default", "odd-names"])
def test_the_sql_engine_equals_the_pandas_one(columns):
    table = simulate(SimulatorConfig(customers=300, terminals=600, days=75, seed=11), columns)
    table = table.sort_values([columns.timestamp, columns.transaction_id]).reset_index(drop=True)
    assert len(table) > 40_000 and table[columns.label].sum() > 100
    expected = features_from(pandas_aggregates(table, columns, DELAY))
    computed = payment_features(table, columns, DELAY)
    assert computed.keys() == expected.keys()
    for name, values in expected.items():
        np.testing.assert_allclose(
            computed[name].astype(np.float32),
            values.astype(np.float32),
            rtol=1e-5,
            atol=1e-5,
            err_msg=name,
        )


@pytest.mark.slow
@pytest.mark.parametrize("columns", [ColumnsConfig(), ODD_NAMES], ids=["default", "odd-names"])
def test_spark_runs_the_same_sql_to_the_same_features(spark, columns):
    table = simulate(SimulatorConfig(customers=120, terminals=240, days=60, seed=3), columns)
    table = table.sort_values([columns.timestamp, columns.transaction_id]).reset_index(drop=True)
    expected = payment_features(table, columns, DELAY)
    wanted = [columns.timestamp, columns.customer_id, columns.terminal_id, columns.amount]
    payments = spark.createDataFrame(
        table[[*wanted, columns.label]].assign(**{POSITION: np.arange(len(table))})
    )
    computed = spark_payment_features(payments, columns, DELAY).toPandas()
    computed = computed.sort_values(POSITION).reset_index(drop=True)
    assert computed[POSITION].tolist() == list(range(len(table)))
    for name, values in expected.items():
        assert computed[name].dtype == values.dtype, name
        np.testing.assert_allclose(computed[name], values, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("columns", [ColumnsConfig(), ODD_NAMES], ids=["default", "odd-names"])
def test_out_of_core_features_equal_the_in_memory_ones(columns, tmp_path):
    table = simulate(SimulatorConfig(customers=150, terminals=300, days=60, seed=5), columns)
    source = write_table(table.sample(frac=1.0, random_state=0), tmp_path / "payments.parquet")
    out = tmp_path / "features.parquet"
    code = main(["features", "--data", str(source), "--out", str(out)], columns)
    assert code == 0
    written = pd.read_parquet(out).sort_values([columns.timestamp, columns.transaction_id])
    expected = build_features(table, columns, DELAY)
    pd.testing.assert_frame_equal(written.reset_index(drop=True), expected)


def test_out_of_core_features_name_a_missing_column(tmp_path, capsys):
    table = simulate(SimulatorConfig(customers=20, terminals=40, days=10, seed=5))
    source = write_table(table.drop(columns="terminal_id"), tmp_path / "payments.parquet")
    code = main(["features", "--data", str(source), "--out", str(tmp_path / "f.parquet")])
    assert code == 2
    assert "no column for columns.terminal_id = 'terminal_id'" in capsys.readouterr().err
