"""End-to-end training on the shipped small table, seeded determinism, distributed tuning."""

import json
import subprocess
import sys

import numpy as np
import optuna
import pytest

import model_store
from monitoring import SCORE_COLUMN
from monitoring import whylogs_adapter as profiles
from settings import ColumnsConfig, Settings
from tests.conftest import REPO_ROOT, SMALL_TABLE, fresh_database, train_small
from training.dataset import load_dataset
from training.features import feature_names
from training.tune import create_study, fit_forest, tune

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(tuning={"trials": 3, "timeout_s": None})


@pytest.fixture(scope="module")
def dataset(settings):
    return load_dataset(SMALL_TABLE, settings)


def test_cli_trains_registers_and_reports(tmp_path):
    result = train_small(tmp_path, 5)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    report = json.loads((run_dir / "metrics.json").read_text())
    for name in (
        "summary.md",
        "data_validation.json",
        "shap_importance.json",
        "roc_curve.png",
        "pr_curve.png",
        "optuna_history.png",
        "optuna_importance.png",
        "shap_summary.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    stored = model_store.get(report["model_tag"])
    assert {"feature_hash", "sha256", "gate", "framework_version"} <= stored.labels.keys()
    metadata = stored.metadata
    assert metadata["test_metrics"]["roc_auc"] == pytest.approx(report["test_metrics"]["roc_auc"])
    for key in (
        "pr_auc",
        "precision_at_threshold",
        "recall_at_threshold",
        "card_precision_top_100_per_day",
        "brier",
    ):
        assert key in metadata["test_metrics"]
    for key in ("train_window", "test_window", "data_fingerprint", "code_version", "params"):
        assert metadata[key]
    assert len(metadata["shap_top_features"]) == 5
    assert metadata["serving_cost"]["artifact_bytes"] > 0
    assert stored.labels["gate"] == ("passed" if report["gate"]["passed"] else "failed")
    assert model_store.verify(stored) == stored.labels["sha256"]
    reference = profiles.from_bytes(model_store.load_reference_profile(stored))
    assert set(profiles.columns(reference)) == {*feature_names(ColumnsConfig()), SCORE_COLUMN}
    assert profiles.count(reference, SCORE_COLUMN) == report["test_metrics"]["rows"]
    assert profiles.count(reference, "tx_amount") > profiles.count(reference, SCORE_COLUMN)
    stages = [stage["stage"].split(" ")[0] for stage in report["stages"]]
    assert stages == ["dataset", "tuning", "final", "evaluation", "registration"]
    for stage in report["stages"]:  # each stage's own time and memory, in the report and aloud
        assert stage["seconds"] >= 0 and 0.05 < stage["peak_memory_gb"] < 8, stage
        assert f"{stage['stage']}: {stage['seconds']} s" in result.stdout
        assert f"| {stage['stage']} | {stage['seconds']} |" in (run_dir / "summary.md").read_text()


def test_same_seed_same_predictions(dataset, settings):
    train = dataset.mask(dataset.split.train)
    params = {"n_estimators": 50, "max_depth": 6, "max_features": "sqrt"}
    first = fit_forest(params, settings.seed, 2, dataset.X[train], dataset.y[train])
    second = fit_forest(params, settings.seed, 2, dataset.X[train], dataset.y[train])
    np.testing.assert_array_equal(first.predict_proba(dataset.X), second.predict_proba(dataset.X))
    again = load_dataset(SMALL_TABLE, settings)
    np.testing.assert_array_equal(again.X, dataset.X)


def test_seeded_tuning_repeats_its_trials(dataset, settings, tmp_path):
    params = []
    for run in ("a", "b"):
        study = tune(dataset, settings.tuning, f"journal:{tmp_path / run}.journal", "s", 1)
        params.append([trial.params for trial in study.trials])
    assert params[0] == params[1]


@pytest.fixture(params=["journal", "postgresql"])
def shared_storage(request, tmp_path) -> str:
    """Where two tuning processes meet: a journal file, or a real PostgreSQL (Optuna's RDB
    storage, addressed with a plain postgresql:// URL)."""
    if request.param == "journal":
        return f"journal:{tmp_path / 'shared.journal'}"
    return fresh_database(request.getfixturevalue("postgres"), "tuning")


def test_two_tuning_processes_share_one_study(shared_storage):
    storage = shared_storage
    command = [
        sys.executable,
        "-m",
        "training",
        "tune",
        "--data",
        str(SMALL_TABLE),
        "--storage",
        storage,
        "--study-name",
        "shared",
        "--trials",
        "2",
    ]
    workers = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr.decode()[-2000:]
    study = create_study(storage, "shared", seed=0)
    finished = [
        trial
        for trial in study.trials
        if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 4
    workers_seen = {trial.user_attrs["worker"] for trial in finished}
    assert {f"{w.pid}" for w in workers} == {seen.split(":")[-1] for seen in workers_seen}
