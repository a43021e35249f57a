"""The training run: tune, choose the threshold, refit, evaluate, explain, report, register."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from tqdm import tqdm

import model_store
from model_store.payments import WINDOWS_DAYS
from monitoring import SCORE_COLUMN
from monitoring import whylogs_adapter as profiles
from settings import MODEL_NAME, Settings
from training import evaluate, report
from training.dataset import Dataset, load_dataset
from training.features import feature_names
from training.stages import Stages
from training.tune import default_storage, fit_forest, tune

SHAP_TOP_FEATURES = 5
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TrainingResult:
    run_dir: Path
    tag: str
    gate_passed: bool
    metrics: dict


def code_version() -> str:
    """The git commit of the training code, marked dirty when the tree has local changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def new_run_dir(runs_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = runs_dir / stamp
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = runs_dir / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def _threshold(dataset: Dataset, params: dict, settings: Settings) -> evaluate.Threshold:
    last = dataset.split.folds[-1]
    fit, validate = dataset.mask(last.fit), dataset.mask(last.validate)
    model = fit_forest(
        params,
        settings.seed,
        settings.tuning.n_jobs,
        dataset.X[fit],
        dataset.y[fit],
        settings.tuning.tree_rows,
    )
    y_score = model.predict_proba(dataset.X[validate])[:, 1]
    return evaluate.choose_threshold(
        dataset.y[validate], y_score, settings.gate.threshold_min_precision
    )


def reference_profile(
    dataset: Dataset, train: np.ndarray, test_scores: np.ndarray, names: list[str]
) -> bytes:
    """A data profile of the training features and of the scores on the test period."""
    features = profiles.profile(pd.DataFrame(dataset.X[train], columns=names))
    scores = profiles.profile(pd.DataFrame({SCORE_COLUMN: test_scores.astype(np.float64)}))
    return profiles.to_bytes(profiles.merge([features, scores]))


def run_training(
    settings: Settings,
    data_path: str | Path | None,
    *,
    promote: bool = False,
    dataset: Dataset | None = None,
    warm_start: dict | None = None,
) -> TrainingResult:
    """Train, evaluate and register a model on `data_path` (or an already loaded `dataset`);
    `warm_start`: parameters tried first by the search."""
    started = time.monotonic()
    stages = Stages()
    if dataset is None:
        with stages.stage("dataset (read, validate, features, split)"):
            dataset = load_dataset(data_path, settings)
    run_dir = new_run_dir(settings.runs_dir)
    print(f"run folder: {run_dir}")
    try:
        result = _train_and_register(settings, dataset, run_dir, started, warm_start, stages)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # a failed run leaves no half-written report
        raise
    if promote:
        if not result.gate_passed:
            raise model_store.PromotionError(f"{result.tag} failed the gate: not promoted")
        record = model_store.promote(
            result.tag,
            pin_file=settings.store.pin_file,
            log_file=settings.store.promotion_log,
            reason=f"trained in run {run_dir.name}",
        )
        print(f"promoted {record.to_tag} (was {record.from_tag}) -> {settings.store.pin_file}")
    return result


def _train_and_register(
    settings: Settings,
    dataset: Dataset,
    run_dir: Path,
    started: float,
    warm_start: dict | None,
    stages: Stages,
) -> TrainingResult:
    columns = settings.columns
    names = feature_names(columns)
    report.write_json(run_dir / "data_validation.json", dataset.summary.as_dict())

    storage = settings.tuning.storage or default_storage(run_dir)
    study_name = settings.tuning.study_name or f"{MODEL_NAME}-{run_dir.name}"
    with stages.stage("tuning"):
        study = tune(dataset, settings.tuning, storage, study_name, settings.seed, warm_start)
    params = dict(study.best_params)

    steps = tqdm(total=4, desc="final model", unit="step")
    with stages.stage("final model (threshold, fit)"):
        threshold = _threshold(dataset, params, settings)
        steps.update()
        train, test = dataset.mask(dataset.split.train), dataset.mask(dataset.split.test)
        model = fit_forest(
            params,
            settings.seed,
            settings.tuning.n_jobs,
            dataset.X[train],
            dataset.y[train],
            settings.tuning.tree_rows,
        )
        steps.update()
    with stages.stage("evaluation (metrics, serving cost, SHAP)"):
        y_score = model.predict_proba(dataset.X[test])[:, 1]
        test_rows = dataset.features.loc[test]
        metrics = evaluate.holdout_metrics(
            dataset.y[test],
            y_score,
            threshold.value,
            test_rows[columns.timestamp],
            test_rows[columns.customer_id].to_numpy() if columns.payment_features else None,
        )
        cost = evaluate.serving_cost(model, dataset.X[test])
        steps.update()
        shap_result = evaluate.explain(
            model, dataset.X[test], names, settings.shap_sample_rows, settings.seed
        )
        steps.update()
        steps.close()
    gate_passed = metrics["roc_auc"] > settings.gate.min_test_roc_auc
    print(
        f"test: ROC-AUC {metrics['roc_auc']:.4f} PR-AUC {metrics['pr_auc']:.4f} "
        f"(gate ROC-AUC > {settings.gate.min_test_roc_auc}: "
        f"{'passed' if gate_passed else 'FAILED'}); {cost['trees']} trees, "
        f"{cost['artifact_bytes'] / 1e6:.1f} MB, {cost['single_row_latency_ms']:.2f} ms/row"
    )

    images = [
        *report.plot_curves(run_dir, dataset.y[test], y_score),
        *report.plot_study(run_dir, study),
        report.plot_shap(run_dir, shap_result, names),
    ]
    report.write_json(run_dir / "shap_importance.json", shap_result.mean_abs)
    top_features = dict(list(shap_result.mean_abs.items())[:SHAP_TOP_FEATURES])
    best_trial = study.best_trial
    run_report = {
        "params": params,
        "threshold": asdict(threshold),
        "test_metrics": metrics,
        "validation": {
            "pr_auc": best_trial.value,
            "roc_auc": best_trial.user_attrs.get("roc_auc"),
            "trials": len(study.trials),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "study": study_name,
            "storage": storage,
        },
        "gate": {"passed": gate_passed, "min_test_roc_auc": settings.gate.min_test_roc_auc},
        "serving_cost": cost,
        "data": dataset.summary.as_dict(),
        "shap_top_features": top_features,
    }
    with stages.stage("registration (engines built and parity-checked, store)"):
        stored = model_store.save_model(
            model,
            features=[feature.as_dict() for feature in dataset.schema],
            threshold=threshold.value,
            gate_passed=gate_passed,
            parity_rows=dataset.X[test],
            reference_profile=reference_profile(dataset, train, y_score, names),
            metadata={
                "params": {key: str(value) for key, value in params.items()},
                "threshold_rule": threshold.rule,
                "test_metrics": metrics,
                "validation_metrics": run_report["validation"],
                "serving_cost": cost,
                "train_window": dataset.split.train.as_dict(),
                "test_window": dataset.split.test.as_dict(),
                "label_delay_days": settings.split.delay_days,
                "columns": columns.model_dump(),
                "feature_windows_days": list(WINDOWS_DAYS) if columns.payment_features else [],
                "data_fingerprint": dataset.fingerprint,
                "code_version": code_version(),
                "shap_top_features": top_features,
                "run": run_dir.name,
            },
        )
    run_report["model_tag"] = stored.tag
    run_report["engine_parity"] = stored.metadata["engine_parity"]
    run_report["labels"] = stored.labels
    run_report["seconds"] = round(time.monotonic() - started, 1)
    run_report["stages"] = stages.records
    report.write_json(run_dir / "metrics.json", run_report)
    report.write_summary(run_dir, run_report, images)
    parity = "; ".join(
        f"{name} {check['reason']}" for name, check in stored.metadata["engine_parity"].items()
    )
    print(
        f"registered {stored.tag} (gate {stored.labels['gate']}, engine {stored.labels['engine']}: "
        f"{parity}); report: {run_dir / 'summary.md'}"
    )
    return TrainingResult(run_dir, stored.tag, gate_passed, metrics)
