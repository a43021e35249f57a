"""Tuning on samples of cards: whole cards, nested and growing samples, the sample-size bound,
successive halving over them, and the rows each tree draws."""

import numpy as np
import optuna
import pytest

from settings import Settings, TuningConfig
from tests.conftest import SMALL_TABLE
from training.dataset import load_dataset
from training.tune import HALVING, fit_forest, fold_rows, tune


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(SMALL_TABLE, Settings())


def cards(dataset, rows: np.ndarray) -> set:
    return set(dataset.features["customer_id"].to_numpy()[rows])


def test_a_card_is_drawn_once_for_all_its_payments(dataset):
    customers = dataset.features["customer_id"].to_numpy()
    draws = {}
    for customer, draw in zip(customers, dataset.card_draw, strict=True):
        assert draws.setdefault(customer, draw) == draw
    assert dataset.card_draw.min() >= 0 and dataset.card_draw.max() < 1
    other = load_dataset(SMALL_TABLE, Settings(seed=7))
    assert not np.array_equal(other.card_draw, dataset.card_draw)


def test_rungs_are_nested_samples_of_whole_cards_bounded_by_sample_rows(dataset):
    cfg = TuningConfig(sample_rows=6000, rungs=3)
    customers = dataset.features["customer_id"].to_numpy()
    for fold, rows in zip(dataset.split.folds, fold_rows(dataset, cfg), strict=True):
        period = np.flatnonzero(dataset.mask(fold.fit))
        assert len(period) > 6000
        for smaller, larger in zip(rows.fits, rows.fits[1:], strict=False):
            assert set(smaller) < set(larger)
            assert 1.5 < len(larger) / len(smaller) < 6  # about HALVING times the cards
        for sample in rows.fits:  # every payment of a drawn card in the fold's fitting days
            drawn = np.isin(customers[period], list(cards(dataset, sample)))
            assert set(period[drawn]) == set(sample)
        assert 0.6 * 6000 < len(rows.fits[-1]) < 1.4 * 6000
        assert set(rows.validate) <= set(np.flatnonzero(dataset.mask(fold.validate)))


def test_all_rows_and_one_rung_is_the_plain_search(dataset):
    rows = fold_rows(dataset, TuningConfig(sample_rows=0, rungs=1))
    for fold, fold_rows_ in zip(dataset.split.folds, rows, strict=True):
        (fit,) = fold_rows_.fits
        np.testing.assert_array_equal(fit, np.flatnonzero(dataset.mask(fold.fit)))
        np.testing.assert_array_equal(
            fold_rows_.validate, np.flatnonzero(dataset.mask(fold.validate))
        )


def test_a_sample_without_fraud_names_the_settings(dataset):
    with pytest.raises(ValueError, match="raise tuning.sample_rows or lower tuning.rungs"):
        fold_rows(dataset, TuningConfig(sample_rows=1000, rungs=5))


def test_trials_climb_the_rungs_and_most_are_stopped_early(dataset, tmp_path):
    cfg = TuningConfig(trials=8, timeout_s=None, sample_rows=9000, rungs=3, max_trees=50)
    study = tune(dataset, cfg, f"journal:{tmp_path / 's.journal'}", "halving", seed=3)
    states = [trial.state for trial in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) >= 3
    for trial in study.trials:
        steps = sorted(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert steps == [HALVING**rung for rung in range(cfg.rungs)]
            assert trial.value == trial.intermediate_values[steps[-1]]
        else:
            assert steps == [HALVING**rung for rung in range(len(steps))] and len(steps) < 3


def test_each_tree_draws_at_most_tree_rows(dataset):
    train = dataset.mask(dataset.split.train)
    X, y = dataset.X[train], dataset.y[train]
    params = {"n_estimators": 5, "max_depth": 4}
    assert fit_forest(params, 0, 1, X, y, tree_rows=1000).max_samples == 1000
    assert fit_forest(params, 0, 1, X, y, tree_rows=len(y)).max_samples is None
    assert fit_forest(params, 0, 1, X, y).max_samples is None
