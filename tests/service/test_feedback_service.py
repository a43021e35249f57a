"""Delayed labels in a real server: /feedback joins them to logged predictions, /stats and the
realized-performance gauges follow, and acknowledged labels survive a restart."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score

from settings import ColumnsConfig
from tests.conftest import SMALL_TABLE
from tests.service.conftest import metric_samples, start_server, stop_server
from training.data import read_table
from training.features import build_features

pytestmark = pytest.mark.slow
COLUMNS = ColumnsConfig()


@pytest.fixture(scope="module")
def labels() -> dict[str, bool]:
    features = build_features(read_table(SMALL_TABLE), COLUMNS, delay_days=7).tail(300)
    ids = features[COLUMNS.transaction_id].astype(str)
    return dict(zip(ids, features[COLUMNS.label].astype(bool), strict=True))


def test_feedback_realized_metrics_and_restart(served_tag, transactions, labels, tmp_path):
    env = {"FRAUD_MONITORING__FEEDBACK_DB": str(tmp_path / "feedback.db")}
    server = start_server(".", tmp_path / "first" / "serve.log", env=env)
    try:
        scored = {}
        for start in range(0, len(transactions), 100):
            response = httpx.post(
                f"{server.url}/predict",
                json={"transactions": transactions[start : start + 100]},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            scored.update({p["transaction_id"]: p for p in response.json()["predictions"]})
        single = httpx.post(
            f"{server.url}/predict",
            json={
                "transactions": [
                    {k: v for k, v in transactions[0].items() if k != "transaction_id"}
                ]
            },
            headers={"X-Request-ID": "single-tx-request"},
        )
        assert single.status_code == 200

        body = [{"transaction_id": i, "is_fraud": label} for i, label in labels.items()]
        body += [
            {"transaction_id": "no-such-transaction", "is_fraud": True},
            {
                "request_id": "single-tx-request",
                "is_fraud": False,
                "label_time": "2026-11-01T00:00:00Z",
            },
        ]
        response = httpx.post(f"{server.url}/feedback", json={"labels": body}, timeout=30)
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["received"] == len(labels) + 2
        assert result["matched"] == len(labels) + 1
        assert result["unknown"] == ["no-such-transaction"]

        truth = np.array([labels[i] for i in scored] + [False])
        scores = np.array(
            [scored[i]["fraud_probability"] for i in scored]
            + [single.json()["predictions"][0]["fraud_probability"]]
        )
        decisions = np.array(
            [scored[i]["is_fraud"] for i in scored] + [single.json()["predictions"][0]["is_fraud"]]
        )
        realized = result["realized"]
        assert realized["model_tag"] == served_tag
        assert realized["labelled"] == len(truth) and realized["frauds"] == truth.sum()
        assert realized["recall"] == pytest.approx(recall_score(truth, decisions))
        assert realized["precision"] == pytest.approx(precision_score(truth, decisions))
        assert realized["pr_auc"] == pytest.approx(average_precision_score(truth, scores))
        assert httpx.get(f"{server.url}/stats").json()["realized"] == realized

        gauges = metric_samples(server, "fraud_realized_")
        assert gauges[f'fraud_realized_recall{{model_tag="{served_tag}"}}'] == pytest.approx(
            realized["recall"]
        )
        assert gauges["fraud_realized_precision_floor"] == 0.5
        feedback = metric_samples(server, "fraud_feedback_labels_total")
        assert feedback['fraud_feedback_labels_total{outcome="unknown"}'] == 1

        for bad, field in [
            ({"labels": [{"is_fraud": True}]}, "transaction_id"),
            ({"labels": [{"transaction_id": "x", "is_fraud": "yes"}]}, "is_fraud"),
            ({"labels": []}, "labels"),
        ]:
            response = httpx.post(f"{server.url}/feedback", json=bad)
            assert response.status_code == 400, response.text
            assert field in response.text
    finally:
        assert stop_server(server) == 0

    restarted = start_server(".", tmp_path / "second" / "serve.log", env=env)
    try:
        assert httpx.get(f"{restarted.url}/stats").json()["realized"] == realized
    finally:
        stop_server(restarted)
