"""Hyperparameter search with Optuna over time-ordered folds.

The search space keeps forests bounded in depth and size: a fully grown forest is several times
larger and slower to serve for a similar AUC. Studies live in an Optuna storage, so several
`python -m training tune` processes pointed at one storage URL share the work.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

from settings import TuningConfig
from training.dataset import Dataset, check_periods

JOURNAL_PREFIX = "journal:"
POSTGRESQL, POSTGRESQL_WITH_DRIVER = "postgresql://", "postgresql+psycopg://"
SCHEMA_ATTEMPTS = 3


def open_storage(url: str) -> optuna.storages.BaseStorage | str:
    """A database URL as Optuna takes it, or `journal:PATH` for a multi-process journal file. A
    plain `postgresql://` URL is read with psycopg 3 (the project's PostgreSQL driver), as the
    prediction log's is, not SQLAlchemy's default driver, which is not installed."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if url.startswith(POSTGRESQL):
        url = POSTGRESQL_WITH_DRIVER + url.removeprefix(POSTGRESQL)
    attempt = 1
    while True:
        try:
            return optuna.storages.RDBStorage(url)
        except sqlalchemy.exc.IntegrityError:
            # Processes started together on an empty database race to create Optuna's tables:
            # the loser finds them made on its next attempt.
            if attempt == SCHEMA_ATTEMPTS:
                raise
            attempt += 1
            time.sleep(0.5)


def default_storage(run_dir: Path) -> str:
    return f"{JOURNAL_PREFIX}{run_dir / 'optuna.journal'}"


def suggest_params(trial: optuna.Trial, cfg: TuningConfig) -> dict[str, Any]:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, cfg.max_trees, step=25),
        "max_depth": trial.suggest_int("max_depth", 4, cfg.max_depth),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 50, log=True),
        "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2", 0.5]),
        "class_weight": trial.suggest_categorical(
            "class_weight", ["none", "balanced", "balanced_subsample"]
        ),
    }


def stored_params(params: dict[str, str]) -> dict[str, Any]:
    """The search's parameters from a model's metadata, where they are kept as strings."""
    parsed: dict[str, Any] = {}
    for name, value in params.items():
        if name == "class_weight" or value in ("sqrt", "log2"):
            parsed[name] = value
        elif name == "max_features":
            parsed[name] = float(value)
        else:
            parsed[name] = int(value)
    return parsed


def fit_forest(
    params: dict[str, Any], seed: int, n_jobs: int, X: np.ndarray, y: np.ndarray
) -> RandomForestClassifier:
    """Fit on `n_jobs` threads; predict on one.

    Parallel predict_proba sums the trees in thread order, so its last bits vary from run to run;
    a single thread keeps predictions reproducible and is faster on the small batches served.
    """
    params = dict(params)
    if params.get("class_weight") == "none":
        params["class_weight"] = None
    model = RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **params).fit(X, y)
    model.n_jobs = 1
    return model


def fold_scores(
    dataset: Dataset, params: dict[str, Any], seed: int, n_jobs: int, trial: optuna.Trial | None
) -> list[dict[str, float]]:
    """Fit on each fold's past, score its later validation days; report to the pruner."""
    scores = []
    for step, fold in enumerate(dataset.split.folds):
        fit, validate = dataset.mask(fold.fit), dataset.mask(fold.validate)
        model = fit_forest(params, seed, n_jobs, dataset.X[fit], dataset.y[fit])
        y_true = dataset.y[validate]
        y_score = model.predict_proba(dataset.X[validate])[:, 1]
        scores.append(
            {
                "pr_auc": float(average_precision_score(y_true, y_score)),
                "roc_auc": float(roc_auc_score(y_true, y_score)),
            }
        )
        if trial is not None:
            trial.report(float(np.mean([s["pr_auc"] for s in scores])), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return scores


def create_study(storage: str, study_name: str, seed: int) -> optuna.Study:
    return optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        load_if_exists=True,
    )


def tune(
    dataset: Dataset,
    cfg: TuningConfig,
    storage: str,
    study_name: str,
    seed: int,
    warm_start: dict[str, Any] | None = None,
) -> optuna.Study:
    """Run up to `cfg.trials` new trials (PR-AUC averaged over folds) and return the study.
    `warm_start` parameters (the champion's, when retraining) are the first trial, so a
    retrain is never worse by bad luck of the search."""
    check_periods(dataset)
    study = create_study(storage, study_name, seed)
    if warm_start and cfg.trials:
        study.enqueue_trial(warm_start, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        scores = fold_scores(dataset, suggest_params(trial, cfg), seed, cfg.n_jobs, trial)
        trial.set_user_attr("roc_auc", float(np.mean([s["roc_auc"] for s in scores])))
        return float(np.mean([s["pr_auc"] for s in scores]))

    if cfg.trials:
        study.optimize(
            objective, n_trials=cfg.trials, timeout=cfg.timeout_s, show_progress_bar=True
        )
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise ValueError(f"study '{study_name}' has no completed trial")
    best = study.best_trial
    print(
        f"tuning: {len(finished)} completed trials in study '{study_name}', best #{best.number} "
        f"PR-AUC {best.value:.4f} ROC-AUC {best.user_attrs.get('roc_auc', float('nan')):.4f} "
        f"{best.params}"
    )
    return study
