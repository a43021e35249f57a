import numpy as np
import pandas as pd
import pytest

from settings import ColumnsConfig, SimulatorConfig
from tests.conftest import SMALL_TABLE, SMALL_TABLE_SIMULATION
from training.data import read_table, write_table
from training.simulate import (
    SCENARIO_CUSTOMER,
    SCENARIO_LARGE_AMOUNT,
    SCENARIO_TERMINAL,
    simulate,
    simulate_regions,
)

SMALL = SimulatorConfig(customers=200, terminals=400, days=60, seed=5)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return simulate(SMALL)


def test_same_seed_same_table(table):
    pd.testing.assert_frame_equal(table, simulate(SMALL))


def test_other_seed_other_table(table):
    other = simulate(SMALL.model_copy(update={"seed": 6}))
    assert not table[["tx_amount"]].equals(other[["tx_amount"]].iloc[: len(table)])


def test_shape_and_columns(table):
    columns = ColumnsConfig()
    assert list(table.columns[:6]) == [
        columns.transaction_id,
        columns.timestamp,
        columns.customer_id,
        columns.terminal_id,
        columns.amount,
        columns.label,
    ]
    assert table[columns.transaction_id].is_unique
    assert table[columns.timestamp].is_monotonic_increasing
    assert (table[columns.amount] >= 0).all()
    days = (table[columns.timestamp].max() - table[columns.timestamp].min()).days
    assert days == SMALL.days - 1


def test_fraud_is_rare_and_has_every_scenario(table):
    assert 0.001 < table["tx_fraud"].mean() < 0.01
    scenarios = set(table.loc[table["tx_fraud"] == 1, "tx_fraud_scenario"])
    assert scenarios == {SCENARIO_LARGE_AMOUNT, SCENARIO_TERMINAL, SCENARIO_CUSTOMER}
    assert (table.loc[table["tx_fraud_scenario"] == SCENARIO_LARGE_AMOUNT, "tx_amount"] > 220).all()


def test_drift_shifts_amounts_and_night_share():
    drift_day = 30
    drifted = simulate(SMALL.model_copy(update={"drift_start_day": drift_day}))
    day = (drifted["tx_datetime"] - drifted["tx_datetime"].min().normalize()).dt.days
    genuine = drifted["tx_fraud"] == 0
    before, after = genuine & (day < drift_day), genuine & (day >= drift_day)
    ratio = drifted.loc[after, "tx_amount"].median() / drifted.loc[before, "tx_amount"].median()
    assert 1.4 < ratio < 1.8
    night = drifted["tx_datetime"].dt.hour < 6
    assert night[after].mean() > night[before].mean() + 0.2
    baseline = simulate(SMALL)
    base_day = (baseline["tx_datetime"] - baseline["tx_datetime"].min().normalize()).dt.days
    early = baseline["tx_fraud"].eq(0) & (base_day < drift_day)
    np.testing.assert_allclose(
        drifted.loc[before, "tx_amount"].median(),
        baseline.loc[early, "tx_amount"].median(),
        rtol=0.05,
    )


def test_shipped_small_table_is_the_seeded_simulation():
    shipped = read_table(SMALL_TABLE)
    regenerated = simulate(SimulatorConfig(**SMALL_TABLE_SIMULATION))
    pd.testing.assert_frame_equal(shipped, regenerated)


def test_regions_are_seeded_worlds_with_ids_that_follow_on(tmp_path):
    parts = list(simulate_regions(SMALL, 3))
    for region, part in enumerate(parts):
        alone = simulate(SMALL.model_copy(update={"seed": SMALL.seed + region}))
        earlier = sum(len(p) for p in parts[:region])
        pd.testing.assert_frame_equal(
            part,
            alone.assign(
                transaction_id=alone["transaction_id"] + earlier,
                customer_id=alone["customer_id"] + region * SMALL.customers,
                terminal_id=alone["terminal_id"] + region * SMALL.terminals,
            ),
        )
    whole = pd.concat(parts, ignore_index=True)
    assert whole["transaction_id"].tolist() == list(range(len(whole)))
    for suffix in ("parquet", "csv"):  # written a part at a time, read back whole
        path = write_table(iter(parts), tmp_path / f"regions.{suffix}")
        written = read_table(path)
        written["tx_datetime"] = pd.to_datetime(written["tx_datetime"])
        pd.testing.assert_frame_equal(written, whole, check_dtype=suffix == "parquet")
