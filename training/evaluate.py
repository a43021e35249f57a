"""Threshold choice, held-out metrics, serving cost figures and SHAP explanations."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shap
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
)

from model_store.store import serialize

TOP_K_PER_DAY = 100


@dataclass(frozen=True)
class Threshold:
    value: float
    rule: str
    precision: float
    recall: float


def choose_threshold(y_true: np.ndarray, y_score: np.ndarray, min_precision: float) -> Threshold:
    """The lowest threshold whose precision reaches `min_precision` (so the highest recall).

    Falls back to the threshold with the best F1 when no threshold reaches that precision.
    """
    precision, recall, thresholds = precision_recall_curve(y_true, y_score)
    precision, recall = precision[:-1], recall[:-1]
    reaching = np.flatnonzero(precision >= min_precision)
    if len(reaching):
        best = reaching[np.argmax(recall[reaching])]
        rule = f"highest recall at precision >= {min_precision} on the last validation fold"
    else:
        f1 = np.divide(
            2 * precision * recall,
            precision + recall,
            out=np.zeros_like(precision),
            where=(precision + recall) > 0,
        )
        best = int(np.argmax(f1))
        rule = (
            f"best F1 on the last validation fold (no threshold reached precision {min_precision})"
        )
    return Threshold(float(thresholds[best]), rule, float(precision[best]), float(recall[best]))


def card_precision_top_k(
    days: pd.Series, customers: np.ndarray, y_true: np.ndarray, y_score: np.ndarray, k: int
) -> float:
    """Mean over days of the fraud share among the k customers with the highest scores that day."""
    frame = pd.DataFrame(
        {"day": days.dt.normalize().to_numpy(), "customer": customers, "y": y_true, "s": y_score}
    )
    per_customer = frame.groupby(["day", "customer"], sort=False).max()
    top = per_customer.sort_values("s", ascending=False).groupby(level="day").head(k)
    return float(top.groupby(level="day")["y"].mean().mean())


def holdout_metrics(
    y_true: np.ndarray,
    y_score: np.ndarray,
    threshold: float,
    days: pd.Series,
    customers: np.ndarray | None,
) -> dict[str, float]:
    """Held-out figures; without customers (a table of ready features) the daily top-k counts
    transactions instead of cards."""
    decision = y_score >= threshold
    true_positives = int((decision & (y_true == 1)).sum())
    top_k = (
        f"card_precision_top_{TOP_K_PER_DAY}_per_day"
        if customers is not None
        else f"precision_top_{TOP_K_PER_DAY}_per_day"
    )
    entities = customers if customers is not None else np.arange(len(y_true))
    return {
        "roc_auc": float(roc_auc_score(y_true, y_score)),
        "pr_auc": float(average_precision_score(y_true, y_score)),
        "precision_at_threshold": true_positives / max(int(decision.sum()), 1),
        "recall_at_threshold": true_positives / max(int(y_true.sum()), 1),
        top_k: card_precision_top_k(days, entities, y_true, y_score, TOP_K_PER_DAY),
        "brier": float(brier_score_loss(y_true, y_score)),
        "rows": int(len(y_true)),
        "frauds": int(y_true.sum()),
    }


def serving_cost(model: RandomForestClassifier, X: np.ndarray, repeats: int = 50) -> dict:
    """Artifact size and the median single-row predict_proba latency, recorded with the metrics."""
    row = X[:1]
    model.predict_proba(row)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_proba(row)
        timings.append(time.perf_counter() - start)
    depths = [estimator.get_depth() for estimator in model.estimators_]
    return {
        "artifact_bytes": len(serialize(model)),
        "single_row_latency_ms": float(np.median(timings) * 1000),
        "trees": len(model.estimators_),
        "max_tree_depth": int(max(depths)),
        "total_nodes": int(sum(e.tree_.node_count for e in model.estimators_)),
    }


@dataclass
class ShapResult:
    mean_abs: dict[str, float]  # sorted, largest first
    values: np.ndarray
    rows: np.ndarray


def explain(
    model: RandomForestClassifier, X: np.ndarray, names: list[str], rows: int, seed: int
) -> ShapResult:
    """SHAP TreeExplainer contributions to the fraud probability on a seeded sample of rows."""
    rng = np.random.default_rng(seed)
    sample = X[np.sort(rng.choice(len(X), size=min(rows, len(X)), replace=False))]
    explanation = shap.TreeExplainer(model)(sample)
    values = explanation.values[..., 1] if explanation.values.ndim == 3 else explanation.values
    mean_abs = np.abs(values).mean(axis=0)
    order = np.argsort(mean_abs)[::-1]
    return ShapResult(
        mean_abs={names[i]: float(mean_abs[i]) for i in order}, values=values, rows=sample
    )
