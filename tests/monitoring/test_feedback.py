"""The prediction log and delayed labels, on a real SQLite file."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score

from monitoring.feedback import FeedbackStore, IncompatibleLog, Label, ScoredRequest

TAG = "fraud_rf:test"


def _store(path, **overrides) -> FeedbackStore:
    options = dict(model_tag=TAG, window_days=30, retention_days=90, max_queued_rows=10_000)
    return FeedbackStore(path, **{**options, **overrides})


def _scored(request_id, scores, transaction_ids=None, threshold=0.5) -> ScoredRequest:
    scores = np.asarray(scores, dtype=np.float64)
    return ScoredRequest(request_id, TAG, scores, scores >= threshold, transaction_ids)


def test_labels_join_predictions_by_transaction_or_request_id(tmp_path):
    store = _store(tmp_path / "feedback.db")
    store.record(_scored("r1", [0.9, 0.2, 0.7], ["t1", "t2", "t3"]))
    store.record(_scored("r2", [0.1]))
    # Submitted right after the predictions: the one writer applies them in order.
    result = store.submit_labels(
        [
            Label(True, transaction_id="t1"),
            Label(True, transaction_id="t2"),
            Label(False, transaction_id="t3"),
            Label(False, request_id="r2"),
            Label(True, transaction_id="never-scored"),
            Label(True, request_id="r1"),  # three transactions: which one?
        ]
    ).result(timeout=10)
    store.close()
    assert (result.received, result.matched) == (6, 4)
    assert result.unknown == ["never-scored"]
    assert result.ambiguous == ["r1"]

    realized = store.realized
    labels, scores = np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.7, 0.1])
    assert realized.labelled == 4 and realized.frauds == 2
    assert realized.precision == pytest.approx(precision_score(labels, scores >= 0.5))
    assert realized.recall == pytest.approx(recall_score(labels, scores >= 0.5))
    assert realized.pr_auc == pytest.approx(average_precision_score(labels, scores))


def test_acknowledged_labels_survive_a_restart(tmp_path):
    path = tmp_path / "feedback.db"
    store = _store(path)
    rng = np.random.default_rng(3)
    scores = rng.random(200)
    ids = [f"t{i}" for i in range(200)]
    store.record(_scored("batch", scores, ids))
    labels = rng.random(200) < scores
    store.submit_labels(
        [Label(bool(label), transaction_id=i) for i, label in zip(ids, labels, strict=True)]
    ).result(timeout=10)
    before = store.realized
    store.close()

    reopened = _store(path)
    reopened.close()
    assert reopened.realized == before
    assert reopened.realized.labelled == 200


def test_undefined_metrics_are_nan_and_other_models_are_not_counted(tmp_path):
    store = _store(tmp_path / "feedback.db")
    store.record(_scored("r1", [0.1, 0.2], ["a", "b"]))
    store.record(ScoredRequest("r9", "fraud_rf:other", np.array([0.9]), np.array([True]), ["c"]))
    store.submit_labels(
        [Label(False, transaction_id="a"), Label(False, transaction_id="b")]
        + [Label(True, transaction_id="c")]
    ).result(timeout=10)
    store.close()
    realized = store.realized
    assert realized.labelled == 2
    assert math.isnan(realized.precision)  # nothing flagged
    assert math.isnan(realized.recall) and math.isnan(realized.pr_auc)  # no fraud
    assert realized.as_dict()["precision"] is None


def test_a_full_queue_drops_log_rows_and_counts_them(tmp_path):
    dropped = []
    store = _store(tmp_path / "feedback.db", max_queued_rows=5, on_drop=dropped.append)
    store.record(_scored("big", np.full(6, 0.5)))
    store.record(_scored("small", [0.5, 0.6]))
    result = store.submit_labels([Label(True, request_id="big")]).result(timeout=10)
    store.close()
    assert dropped == [6]
    assert result.unknown == ["big"]


def test_a_log_of_another_schema_version_is_refused_by_name(tmp_path):
    path = tmp_path / "feedback.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE predictions (request_id TEXT)")
    with pytest.raises(IncompatibleLog, match="feedback.db"):
        _store(path)
