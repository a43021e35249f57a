"""The run report: metrics JSON, plots and a Markdown summary in the run folder."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import shap  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from training.evaluate import ShapResult  # noqa: E402


def write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return path


def plot_curves(run_dir: Path, y_true: np.ndarray, y_score: np.ndarray) -> list[Path]:
    fpr, tpr, _ = roc_curve(y_true, y_score)
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    paths = []
    for name, x, y, xlabel, ylabel in (
        ("roc_curve.png", fpr, tpr, "false positive rate", "true positive rate"),
        ("pr_curve.png", recall, precision, "recall", "precision"),
    ):
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(x, y)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"test period: {name[:-10].upper()} curve")
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=100)
        plt.close(fig)
        paths.append(run_dir / name)
    return paths


def plot_comparison(run_dir: Path, y_true: np.ndarray, scores: dict[str, np.ndarray]) -> list[Path]:
    """Champion and challenger on one window: PR and ROC curves on shared axes, and the
    distributions of their scores."""
    fig, (pr, roc) = plt.subplots(1, 2, figsize=(10, 4))
    for role, y_score in scores.items():
        precision, recall, _ = precision_recall_curve(y_true, y_score)
        fpr, tpr, _ = roc_curve(y_true, y_score)
        pr.plot(recall, precision, label=role)
        roc.plot(fpr, tpr, label=role)
    pr.set(xlabel="recall", ylabel="precision", title="PR curves, comparison window")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curves")
    for ax in (pr, roc):
        ax.legend()
    fig.tight_layout()
    curves = run_dir / "comparison_curves.png"
    fig.savefig(curves, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 41)
    for role, y_score in scores.items():
        ax.hist(y_score, bins=bins, histtype="step", log=True, label=role)
    ax.set(xlabel="fraud probability", ylabel="transactions (log)", title="score distributions")
    ax.legend()
    fig.tight_layout()
    distributions = run_dir / "comparison_scores.png"
    fig.savefig(distributions, dpi=100)
    plt.close(fig)
    return [curves, distributions]


def plot_study(run_dir: Path, study: optuna.Study) -> list[Path]:
    paths = []
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plots = [("optuna_history.png", optuna.visualization.matplotlib.plot_optimization_history)]
    if len(completed) > 1:
        plots.append(
            ("optuna_importance.png", optuna.visualization.matplotlib.plot_param_importances)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in plots:
            ax = plot(study)
            ax.figure.set_size_inches(7, 4.5)
            ax.figure.tight_layout()
            ax.figure.savefig(run_dir / name, dpi=100)
            plt.close(ax.figure)
            paths.append(run_dir / name)
    return paths


def plot_shap(run_dir: Path, result: ShapResult, names: list[str]) -> Path:
    shap.summary_plot(result.values, result.rows, feature_names=names, show=False)
    fig = plt.gcf()
    fig.tight_layout()
    fig.savefig(run_dir / "shap_summary.png", dpi=100)
    plt.close(fig)
    return run_dir / "shap_summary.png"


def write_summary(run_dir: Path, report: dict[str, Any], images: list[Path]) -> Path:
    test = report["test_metrics"]
    gate = report["gate"]
    lines = [
        f"# Training run {run_dir.name}",
        "",
        f"- model tag: `{report.get('model_tag', 'not registered')}`",
        f"- gate: **{'passed' if gate['passed'] else 'failed'}** "
        f"(test ROC-AUC {test['roc_auc']:.4f} > {gate['min_test_roc_auc']})",
        f"- test PR-AUC: {test['pr_auc']:.4f}; precision / recall at threshold "
        f"{report['threshold']['value']:.4f}: {test['precision_at_threshold']:.3f} / "
        f"{test['recall_at_threshold']:.3f}",
        f"- threshold rule: {report['threshold']['rule']}",
        f"- best parameters: `{report['params']}`",
        f"- serving cost: {report['serving_cost']}",
        f"- data: {report['data']['rows_out']} rows, dropped {report['data']['dropped'] or 'none'}",
        "",
        "Files: [metrics.json](metrics.json), [data_validation.json](data_validation.json), "
        "[shap_importance.json](shap_importance.json)",
        "",
    ]
    if report.get("stages"):
        lines += ["| stage | seconds | peak memory GB |", "|---|---|---|"]
        lines += [
            f"| {stage['stage']} | {stage['seconds']} | {stage['peak_memory_gb']} |"
            for stage in report["stages"]
        ]
        lines.append("")
    lines += [f"![{image.stem}]({image.name})" for image in images]
    path = run_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
