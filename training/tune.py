"""Hyperparameter search with Optuna over time-ordered folds, on samples of cards.

A trial fits each fold on all payments of a sample of cards, not on every row: a table ten times
larger then costs no more to tune, and successive halving over the sample size (three rungs, a
third of the trials climbing each) spends the budget on the trials that look best. Cards, not
days, are sampled: a day sample would leave holes in the history the folds' time order rests on
and drop the most recent days, the ones most like the test; a card sample keeps every day, and
the features, built before sampling on the whole table, are those the service computes.

The search space keeps forests bounded in depth and size: a fully grown forest is several times
larger and slower to serve for a similar AUC. Studies live in an Optuna storage, so several
`python -m training tune` processes pointed at one storage URL share the work.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
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
SCHEMA_RACES = {"42P07", "42710", "23505"}  # duplicate table, duplicate object, unique violation


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
        except sqlalchemy.exc.DBAPIError as error:
            # Processes started together on an empty database race to create Optuna's tables
            # (PostgreSQL says so as a duplicate table, type or key): the loser finds them made
            # on its next attempt.
            raced = getattr(error.orig, "sqlstate", None) in SCHEMA_RACES
            if attempt == SCHEMA_ATTEMPTS or not (
                raced or isinstance(error, sqlalchemy.exc.IntegrityError)
            ):
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
    params: dict[str, Any],
    seed: int,
    n_jobs: int,
    X: np.ndarray,
    y: np.ndarray,
    tree_rows: int = 0,
) -> RandomForestClassifier:
    """Fit on `n_jobs` threads, each tree on a bootstrap sample of at most `tree_rows` rows (so
    a fit's cost stops growing with the table; 0: no bound); predict on one.

    Parallel predict_proba sums the trees in thread order, so its last bits vary from run to run;
    a single thread keeps predictions reproducible and is faster on the small batches served.
    """
    params = dict(params)
    if params.get("class_weight") == "none":
        params["class_weight"] = None
    if 0 < tree_rows < len(y):
        params["max_samples"] = tree_rows
    model = RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **params).fit(X, y)
    model.n_jobs = 1
    return model


HALVING = 3  # each rung's sample holds 3x the cards of the one below; a third of trials go on


@dataclass(frozen=True)
class FoldRows:
    """One fold's rows (indices): what a trial fits on at each rung, nested samples of cards
    that grow by HALVING, and the later days it is scored on (a sample of cards of its own)."""

    fits: tuple[np.ndarray, ...]
    validate: np.ndarray


def _share(rows: int, most: int) -> float:
    return min(1.0, most / rows) if most else 1.0


def fold_rows(dataset: Dataset, cfg: TuningConfig) -> list[FoldRows]:
    """The samples every trial uses: per fold, at most `cfg.sample_rows` rows at the top rung
    (all payments of the cards drawn), each rung below a third of the cards of the next. Whole
    cards keep every payment of a card's history and all the fold's days (the validation days
    last, as in the test); ValueError, naming the settings, if a sample lacks a class."""
    folds = []
    for number, fold in enumerate(dataset.split.folds, start=1):
        fit = np.flatnonzero(dataset.mask(fold.fit))
        validate = np.flatnonzero(dataset.mask(fold.validate))
        top = _share(len(fit), cfg.sample_rows)
        fits = tuple(
            dataset.cards_below(fit, top / HALVING ** (cfg.rungs - rung))
            for rung in range(1, cfg.rungs + 1)
        )
        rows = FoldRows(fits, dataset.cards_below(validate, _share(len(validate), cfg.sample_rows)))
        for what, sample in (("smallest fitting sample", fits[0]), ("validation", rows.validate)):
            frauds = int(dataset.y[sample].sum())
            if frauds in (0, len(sample)):
                raise ValueError(
                    f"the {what} of fold {number} has {len(sample)} rows and {frauds} frauds, "
                    "it needs both classes: raise tuning.sample_rows or lower tuning.rungs"
                )
        folds.append(rows)
    return folds


def fold_scores(
    dataset: Dataset,
    folds: list[FoldRows],
    rung: int,
    params: dict[str, Any],
    seed: int,
    cfg: TuningConfig,
) -> list[dict[str, float]]:
    """Fit on each fold's sample at `rung`, score its validation sample (on every thread: a
    score's last bits do not matter here)."""
    scores = []
    for fold in folds:
        fit = fold.fits[rung]
        model = fit_forest(params, seed, cfg.n_jobs, dataset.X[fit], dataset.y[fit], cfg.tree_rows)
        model.n_jobs = cfg.n_jobs
        y_true = dataset.y[fold.validate]
        y_score = model.predict_proba(dataset.X[fold.validate])[:, 1]
        scores.append(
            {
                "pr_auc": float(average_precision_score(y_true, y_score)),
                "roc_auc": float(roc_auc_score(y_true, y_score)),
            }
        )
    return scores


def create_study(storage: str, study_name: str, seed: int) -> optuna.Study:
    return optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=HALVING),
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
    """Run up to `cfg.trials` new trials and return the study. A trial climbs the rungs of
    fold_rows, its value the PR-AUC averaged over folds at each; successive halving stops those
    not in the best third of their rung, so most of the budget goes to the promising ones on the
    largest samples. `warm_start` parameters (the champion's, when retraining) are the first
    trial, so a retrain is never worse by bad luck of the search."""
    check_periods(dataset)
    folds = fold_rows(dataset, cfg)
    study = create_study(storage, study_name, seed)
    if warm_start and cfg.trials:
        study.enqueue_trial(warm_start, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        params = suggest_params(trial, cfg)
        for rung in range(cfg.rungs):
            scores = fold_scores(dataset, folds, rung, params, seed, cfg)
            value = float(np.mean([s["pr_auc"] for s in scores]))
            trial.report(value, HALVING**rung)
            if rung + 1 < cfg.rungs and trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("roc_auc", float(np.mean([s["roc_auc"] for s in scores])))
        return value

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
