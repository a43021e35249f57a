"""Features look only at strictly earlier transactions, honour the label delay, ignore row order."""

import numpy as np
import pandas as pd
import pytest

from settings import ColumnsConfig, SimulatorConfig, SplitConfig
from training.dataset import temporal_split
from training.features import (
    ENGINEERED_FEATURES,
    build_features,
    feature_matrix,
    feature_names,
    feature_schema,
)
from training.simulate import simulate

COLUMNS = ColumnsConfig()
DELAY = 7


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return simulate(SimulatorConfig(customers=150, terminals=300, days=60, seed=5))


def _tx(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (id, timestamp, customer, terminal, amount, label)."""
    frame = pd.DataFrame(
        rows,
        columns=[
            COLUMNS.transaction_id,
            COLUMNS.timestamp,
            COLUMNS.customer_id,
            COLUMNS.terminal_id,
            COLUMNS.amount,
            COLUMNS.label,
        ],
    )
    frame[COLUMNS.timestamp] = pd.to_datetime(frame[COLUMNS.timestamp])
    return frame


def test_output_columns_follow_the_schema(table):
    features = build_features(table, COLUMNS, DELAY)
    assert list(features.columns[4:]) == feature_names(COLUMNS)
    for feature in feature_schema(COLUMNS):
        assert str(features[feature.name].dtype) == feature.dtype
        values = features[feature.name]
        if feature.minimum is not None:
            assert values.min() >= feature.minimum, feature.name
        if feature.maximum is not None:
            assert values.max() <= feature.maximum, feature.name
    matrix = feature_matrix(features, COLUMNS)
    assert matrix.dtype == np.float32 and matrix.shape == (len(table), len(ENGINEERED_FEATURES))
    assert np.isfinite(matrix).all()


def test_customer_windows_use_strictly_earlier_transactions():
    features = build_features(
        _tx(
            [
                (1, "2026-01-05 10:00", 7, 1, 10.0, 0),
                (2, "2026-01-05 12:00", 7, 2, 20.0, 0),
                (3, "2026-01-06 11:00", 7, 1, 30.0, 0),
                (4, "2026-01-06 11:00", 7, 3, 60.0, 0),  # same instant: not in each other's past
                (5, "2026-01-06 11:00", 8, 1, 99.0, 1),  # another customer
            ]
        ),
        COLUMNS,
        DELAY,
    ).set_index(COLUMNS.transaction_id)
    assert features.loc[1, "customer_nb_tx_1d"] == 0
    assert features.loc[1, "customer_amount_ratio_30d"] == 1.0
    assert features.loc[1, "customer_terminal_new_30d"] == 1
    for tx in (3, 4):
        assert features.loc[tx, "customer_nb_tx_1d"] == 1  # only 12:00 the day before
        assert features.loc[tx, "customer_avg_amount_1d"] == 20.0
        assert features.loc[tx, "customer_nb_tx_7d"] == 2
        assert features.loc[tx, "customer_avg_amount_7d"] == 15.0
    assert features.loc[3, "customer_terminal_new_30d"] == 0  # paid at terminal 1 before
    assert features.loc[4, "customer_terminal_new_30d"] == 1
    assert features.loc[4, "customer_amount_ratio_30d"] == pytest.approx(4.0)
    std = np.std([10.0, 20.0], ddof=1)
    assert features.loc[4, "customer_amount_zscore_30d"] == pytest.approx((60 - 15) / std, 1e-5)
    assert features.loc[5, "customer_nb_tx_30d"] == 0


def test_terminal_risk_waits_for_the_label_delay():
    delay = 2
    features = build_features(
        _tx(
            [
                (1, "2026-01-01 10:00", 1, 9, 10.0, 1),
                (2, "2026-01-01 11:00", 2, 9, 10.0, 0),
                (3, "2026-01-03 09:59", 3, 9, 10.0, 0),  # 2 days later, minus a minute
                (4, "2026-01-03 10:30", 4, 9, 10.0, 0),
                (5, "2026-01-03 11:30", 5, 9, 10.0, 0),
                (6, "2026-01-04 10:30", 6, 9, 10.0, 0),
            ]
        ),
        COLUMNS,
        delay,
    ).set_index(COLUMNS.transaction_id)
    # tx 3: window [Dec 31 09:59, Jan 1 09:59) holds no transaction yet
    assert features.loc[3, "terminal_nb_tx_1d"] == 0
    assert features.loc[3, "terminal_risk_1d"] == 0
    # tx 4: window [Dec 31 10:30, Jan 1 10:30) holds the fraud only
    assert features.loc[4, "terminal_nb_tx_1d"] == 1
    assert features.loc[4, "terminal_risk_1d"] == 1.0
    # tx 5: both known transactions
    assert features.loc[5, "terminal_risk_1d"] == 0.5
    # tx 6: window [Jan 1 10:30, Jan 2 10:30) has only the genuine one; 7 days hold both
    assert features.loc[6, "terminal_risk_1d"] == 0.0
    assert features.loc[6, "terminal_risk_7d"] == 0.5
    # labels of tx 3-5 are not known yet at tx 6, whatever they are
    assert features.loc[6, "terminal_nb_tx_7d"] == 2


def test_shuffling_rows_does_not_change_features(table):
    expected = build_features(table, COLUMNS, DELAY)
    shuffled = table.sample(frac=1.0, random_state=123)
    pd.testing.assert_frame_equal(build_features(shuffled, COLUMNS, DELAY), expected)


def test_test_period_cannot_influence_training_features_or_labels(table):
    split_config = SplitConfig(
        burn_in_days=10, train_days=28, delay_days=DELAY, test_days=14, fold_validation_days=5
    )
    timestamps = table[COLUMNS.timestamp]
    split = temporal_split(timestamps.min(), timestamps.max(), split_config)
    in_test = split.test.contains(timestamps)
    assert in_test.any()

    tampered = table.copy()
    rng = np.random.default_rng(0)
    tampered.loc[in_test, COLUMNS.amount] *= 10
    tampered.loc[in_test, COLUMNS.label] = 1 - tampered.loc[in_test, COLUMNS.label]
    tampered.loc[in_test, COLUMNS.terminal_id] = rng.permutation(
        tampered.loc[in_test, COLUMNS.terminal_id].to_numpy()
    )
    removed = table.loc[~in_test]

    original = build_features(table, COLUMNS, DELAY)
    in_train = split.train.contains(original[COLUMNS.timestamp])
    assert in_train.sum() > 1000
    for variant in (tampered, removed):
        features = build_features(variant, COLUMNS, DELAY)
        features = features.loc[split.train.contains(features[COLUMNS.timestamp])]
        pd.testing.assert_frame_equal(
            features.reset_index(drop=True), original.loc[in_train].reset_index(drop=True)
        )


def test_extra_feature_columns_follow_the_engineered_ones(table):
    columns = ColumnsConfig(extra_features=["merchant_score"])
    with_extra = table.assign(merchant_score=np.linspace(0, 1, len(table)))
    features = build_features(with_extra, columns, DELAY)
    assert feature_names(columns)[-1] == "merchant_score"
    assert list(features.columns[4:]) == feature_names(columns)
