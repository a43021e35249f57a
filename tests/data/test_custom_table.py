"""A user's CSV with its own column names and an extra feature, read through a TOML config."""

import numpy as np

from settings import SimulatorConfig, load_settings
from tests.conftest import EXAMPLE_CONFIG, EXAMPLE_RENAMING
from training.data import write_table
from training.dataset import load_dataset
from training.features import feature_names
from training.simulate import simulate


def test_example_config_trains_on_renamed_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUD_TUNING__TRIALS", "2")
    settings = load_settings(EXAMPLE_CONFIG)
    assert settings.tuning.trials == 2  # the environment wins over the file
    assert settings.columns.label == "is_fraud"
    table = simulate(SimulatorConfig(customers=100, terminals=200, days=115, seed=5))
    renamed = table.rename(columns=EXAMPLE_RENAMING).assign(
        merchant_risk_score=np.random.default_rng(0).uniform(size=len(table))
    )
    renamed.loc[3, "amount_eur"] = -1.0  # dropped and counted: the example config cleans
    path = write_table(renamed, tmp_path / "payments.csv")

    dataset = load_dataset(path, settings)
    assert dataset.summary.dropped == {"negative amount_eur": 1}
    assert dataset.X.shape == (len(table) - 1, len(feature_names(settings.columns)))
    assert feature_names(settings.columns)[-1] == "merchant_risk_score"
    assert dataset.mask(dataset.split.test).sum() > 0
