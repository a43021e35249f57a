"""`python -m monitoring profile` and `drift` on a model that carries a reference profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

import model_store
from monitoring import SCORE_COLUMN
from monitoring import whylogs_adapter as profiles
from monitoring.__main__ import main
from settings import ColumnsConfig, SimulatorConfig, load_settings
from training.features import build_features, feature_names, feature_schema
from training.simulate import simulate

COLUMNS = ColumnsConfig()
NAMES = feature_names(COLUMNS)


@pytest.fixture(scope="module")
def drifted_features() -> tuple[pd.DataFrame, pd.DataFrame]:
    config = SimulatorConfig(customers=300, terminals=600, days=90, seed=5, drift_start_day=60)
    features = build_features(simulate(config), COLUMNS, delay_days=7)
    day = (features[COLUMNS.timestamp] - features[COLUMNS.timestamp].min().normalize()).dt.days
    return features.loc[(day >= 30) & (day < 55), NAMES], features.loc[day >= 62, NAMES]


def _with_scores(frame: pd.DataFrame, model) -> pd.DataFrame:
    scores = model.predict_proba(frame.to_numpy(np.float32))[:, 1]
    return frame.assign(**{SCORE_COLUMN: scores})


def test_drift_report_flags_the_shifted_features(drifted_features, tmp_path, capsys):
    before, after = drifted_features
    model = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0)
    model.fit(before.to_numpy(np.float32), (before["tx_amount"] > 100).to_numpy())
    stored = model_store.save_model(
        model,
        features=[f.as_dict() for f in feature_schema(COLUMNS)],
        threshold=0.5,
        gate_passed=True,
        metadata={},
        reference_profile=profiles.to_bytes(profiles.profile(_with_scores(before, model))),
    )
    windows = tmp_path / "windows"
    windows.mkdir()
    for index, start in enumerate(range(0, 3000, 1000)):
        chunk = _with_scores(after.iloc[start : start + 1000], model)
        name = f"window-{1_700_000_000 + 300 * index}-{1_700_000_300 + 300 * index}.bin"
        (windows / name).write_bytes(profiles.to_bytes(profiles.profile(chunk)))
    out = tmp_path / "report.html"
    code = main(["drift", "--model", stored.tag, "--profiles", str(windows), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Drift of 3 window(s)" in printed and "tx_amount" in printed
    page = out.read_text()
    assert "<tr class='drift'><td>tx_amount</td>" in page
    assert page.count("data:image/png;base64,") >= 10
    assert "tx_during_weekend" not in page  # excluded by default

    later = ["--since", "2023-11-14T22:18:00+00:00"]  # after the first window's start
    code = main(["drift", "--model", stored.tag, "--profiles", str(windows), *later])
    printed = capsys.readouterr().out
    assert code == 0 and "Drift of 2 window(s)" in printed
    default_out = Path(printed.rsplit("-> ", 1)[1].strip())  # no --out: into the runs folder
    assert default_out.parent == load_settings().runs_dir / "drift" and default_out.is_file()


def test_profile_command_writes_a_loadable_profile(drifted_features, tmp_path):
    before, _ = drifted_features
    table = tmp_path / "features.csv"
    before.head(500).to_csv(table, index=False)
    assert main(["profile", "--data", str(table)]) == 0
    view = profiles.from_bytes((tmp_path / "features.profile.bin").read_bytes())
    assert sorted(profiles.columns(view)) == sorted(NAMES)
    assert profiles.count(view, "tx_amount") == 500


def test_drift_refuses_a_model_without_reference(tmp_path, capsys):
    X = np.zeros((20, len(NAMES)), np.float32)
    model = RandomForestClassifier(n_estimators=2).fit(X, np.arange(20) % 2)
    stored = model_store.save_model(
        model,
        features=[f.as_dict() for f in feature_schema(COLUMNS)],
        threshold=0.5,
        gate_passed=True,
        metadata={},
    )
    assert main(["drift", "--model", stored.tag, "--profiles", str(tmp_path)]) == 2
    assert "no reference profile" in capsys.readouterr().err
