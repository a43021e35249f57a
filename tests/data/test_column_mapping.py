"""Column mapping: tables of ready features, and mistakes named by the setting to change."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pydantic import ValidationError

from settings import ColumnsConfig, SplitConfig, load_settings
from tests.conftest import REPO_ROOT
from tests.feature_table import CONFIG, FEATURES, feature_table
from training.__main__ import build_parser
from training.__main__ import main as training_cli
from training.data import write_table
from training.dataset import check_periods, load_dataset
from training.features import feature_names


def _settings(tmp_path, text: str = CONFIG):
    path = tmp_path / "features.toml"
    path.write_text(text)
    return path, load_settings(path)


def test_a_table_of_ready_features_is_exactly_the_models_inputs(tmp_path):
    _, settings = _settings(tmp_path)
    data = write_table(feature_table(), tmp_path / "features.parquet")
    dataset = load_dataset(data, settings)
    assert feature_names(settings.columns) == FEATURES
    assert dataset.X.shape[1] == len(FEATURES)
    schema = {feature.name: feature for feature in dataset.schema}
    assert (schema["device_known"].dtype, schema["device_known"].maximum) == ("int8", 1)
    assert (schema["events_7d"].dtype, schema["events_7d"].minimum) == ("int32", 0)
    assert (schema["signal_a"].dtype, schema["signal_a"].minimum) == ("float32", None)
    assert (schema["signal_b"].minimum, schema["signal_b"].maximum) == (0.0, 1.0)
    np.testing.assert_array_equal(dataset.X[:, 3], dataset.features["device_known"])


@pytest.mark.parametrize(
    ("columns", "named"),
    [
        (
            {"customer_id": "card", "terminal_id": "card", "transaction_id": "card"},
            ["columns.transaction_id", "columns.customer_id", "columns.terminal_id"],
        ),
        (
            {"amount": "amount_eur", "extra_features": ["amount_eur"]},
            ["columns.amount", "columns.extra_features[0]"],
        ),
        ({"label": "y", "extra_features": ["x", "y"]}, ["columns.label"]),
        ({"payment_features": False}, ["columns.extra_features"]),
    ],
)
def test_a_column_in_two_roles_names_the_settings(columns, named):
    with pytest.raises(ValidationError) as raised:
        ColumnsConfig(**columns)
    for setting in named:
        assert setting in str(raised.value)


def test_folds_that_do_not_fit_name_their_settings():
    with pytest.raises(ValidationError) as raised:
        SplitConfig(train_days=20, folds=3, fold_validation_days=7)
    for setting in ("split.folds", "split.fold_validation_days", "split.train_days"):
        assert setting in str(raised.value)


def test_the_cli_names_the_setting_and_leaves_no_run_folder(tmp_path, capsys):
    data = write_table(feature_table(days=20), tmp_path / "features.parquet")
    runs = tmp_path / "runs"
    bad = CONFIG.replace('label = "confirmed_fraud"', 'label = "event_id"')
    config, _ = _settings(tmp_path, CONFIG)
    config.write_text(bad)
    train = ["--config", str(config), "train", "--data", str(data), "--runs-dir", str(runs)]
    assert training_cli(train) == 2
    assert "columns.transaction_id and columns.label" in capsys.readouterr().err

    config.write_text(CONFIG)  # the table's 20 days are shorter than the split
    assert training_cli(train) == 2
    assert "shorten the split" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())


def test_a_fold_without_fraud_names_the_settings(tmp_path):
    table = feature_table()
    day = (table["event_time"] - table["event_time"].min()).dt.days
    table.loc[(day >= 28) & (day < 35), "confirmed_fraud"] = 0  # fold 1 validates on days 28-34
    _, settings = _settings(tmp_path)
    with pytest.raises(ValueError, match="validation days of fold 1 .* split.fold_validation_days"):
        check_periods(load_dataset(write_table(table, tmp_path / "t.parquet"), settings))


def test_help_names_the_example_files_by_path():
    examples = re.findall(r"ops/examples/[\w.]+\.toml", build_parser().format_help())
    assert len(examples) == 2
    for example in examples:
        assert (REPO_ROOT / example).is_file()
