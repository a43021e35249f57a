"""Every kind of bad input is rejected with the column named; cleaning is explicit and counted."""

import numpy as np
import pandas as pd
import pytest

from settings import CleaningConfig, ColumnsConfig, SimulatorConfig
from tests.conftest import run_module
from training.data import DataValidationError, validate, write_table
from training.simulate import simulate

COLUMNS = ColumnsConfig()
STRICT = CleaningConfig()


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    return simulate(SimulatorConfig(customers=100, terminals=200, days=20, seed=5))


def _problems(table: pd.DataFrame) -> list[str]:
    with pytest.raises(DataValidationError) as raised:
        validate(table, COLUMNS, STRICT)
    return [str(problem) for problem in raised.value.problems]


def test_good_table_passes_and_is_summarised(good):
    table, summary = validate(good.sample(frac=1, random_state=0), COLUMNS, STRICT)
    assert summary.rows_in == summary.rows_out == len(good)
    assert summary.dropped == {}
    assert table[COLUMNS.timestamp].is_monotonic_increasing
    assert 0 < summary.fraud_rate < 0.05


def test_missing_column(good):
    (problem,) = _problems(good.drop(columns=[COLUMNS.terminal_id]))
    assert f"'{COLUMNS.terminal_id}'" in problem and "missing column" in problem


def test_wrong_type(good):
    bad = good.assign(**{COLUMNS.amount: good[COLUMNS.amount].astype(str) + " EUR"})
    (problem,) = _problems(bad)
    assert f"'{COLUMNS.amount}'" in problem and "must be numeric" in problem


@pytest.mark.parametrize("column", [COLUMNS.customer_id, COLUMNS.amount, COLUMNS.timestamp])
def test_nulls(good, column):
    bad = good.copy()
    bad.loc[[3, 7], column] = None
    (problem,) = _problems(bad)
    assert f"'{column}'" in problem and "null values (2 rows)" in problem


@pytest.mark.parametrize(
    ("value", "kind"), [(-5.0, "negative"), (np.inf, "non-finite"), (-np.inf, "non-finite")]
)
def test_bad_amounts(good, value, kind):
    bad = good.copy()
    bad.loc[4, COLUMNS.amount] = value
    problems = _problems(bad)
    assert any(f"'{COLUMNS.amount}': {kind} values (1 rows)" in p for p in problems)


def test_duplicate_ids(good):
    bad = good.copy()
    bad.loc[5, COLUMNS.transaction_id] = bad.loc[6, COLUMNS.transaction_id]
    (problem,) = _problems(bad)
    assert f"'{COLUMNS.transaction_id}': duplicate values (2 rows)" in problem


def test_label_not_binary(good):
    bad = good.copy()
    bad.loc[[1, 2], COLUMNS.label] = 2
    (problem,) = _problems(bad)
    assert f"'{COLUMNS.label}'" in problem and "binary" in problem and "(2 rows)" in problem


def test_single_class(good):
    (problem,) = _problems(good.assign(**{COLUMNS.label: 0}))
    assert f"'{COLUMNS.label}'" in problem and "single class" in problem


def test_unparseable_timestamps(good):
    bad = good.copy()
    bad[COLUMNS.timestamp] = bad[COLUMNS.timestamp].astype(str)
    bad.loc[8, COLUMNS.timestamp] = "yesterday-ish"
    (problem,) = _problems(bad)
    assert f"'{COLUMNS.timestamp}': unparseable values (1 rows)" in problem


def test_every_problem_is_reported_at_once(good):
    bad = good.copy()
    bad.loc[4, COLUMNS.amount] = -1.0
    bad.loc[5, COLUMNS.transaction_id] = bad.loc[6, COLUMNS.transaction_id]
    bad.loc[1, COLUMNS.label] = 7
    assert len(_problems(bad)) == 3


def test_cleaning_drops_and_counts_row_problems(good):
    bad = good.copy()
    bad.loc[4, COLUMNS.amount] = -1.0
    bad.loc[5, COLUMNS.transaction_id] = bad.loc[6, COLUMNS.transaction_id]
    table, summary = validate(bad, COLUMNS, CleaningConfig(drop_invalid_rows=True))
    assert summary.dropped == {
        f"negative {COLUMNS.amount}": 1,
        f"duplicate {COLUMNS.transaction_id}": 2,
    }
    assert summary.rows_out == len(table) == len(good) - 3


def test_cli_exits_with_the_column_named(good, tmp_path):
    """The one data error taken through `python -m training` in its own process."""
    bad = good.copy()
    bad.loc[4, COLUMNS.amount] = -1.0
    path = write_table(bad, tmp_path / "bad.csv")
    result = run_module("training", "train", "--data", str(path), "--trials", "1")
    assert result.returncode == 2
    assert f"column '{COLUMNS.amount}': negative values (1 rows)" in result.stderr
