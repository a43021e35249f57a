"""/score in the service: raw payments replayed through the application in time order, labels
sent to /feedback as they become known, give training's features and /predict's decisions; bad
payments are refused by field."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

import model_store
from model_store.payments import DAY_SECONDS
from settings import ColumnsConfig
from tests.conftest import SMALL_TABLE
from tests.service.conftest import COLUMNS
from training.data import read_table
from training.features import build_features, feature_names, request_rows

DELAY = pd.Timedelta(days=7)
MAX_ROWS = 1_000


def _payment(row, columns: ColumnsConfig) -> dict:
    payment = {
        columns.transaction_id: int(row[columns.transaction_id]),
        columns.timestamp: row[columns.timestamp].isoformat(),
        columns.customer_id: int(row[columns.customer_id]),
        columns.terminal_id: int(row[columns.terminal_id]),
        columns.amount: float(row[columns.amount]),
    }
    return payment | {name: float(row[name]) for name in columns.extra_features}


def _replay_batches(period: pd.DataFrame, columns: ColumnsConfig):
    """The period's payments in time order, cut where a fraud label falls due (sent before the
    next batch: genuine labels change no feature), at most MAX_ROWS a batch: yields (labels due,
    payments)."""
    frauds = period[period[columns.label] == 1]
    due = frauds.assign(due=frauds[columns.timestamp] + DELAY).sort_values("due")
    due_times = due["due"].to_numpy()
    sent, batch = 0, []
    for row in period.to_dict("records"):
        known = np.searchsorted(due_times, row[columns.timestamp].to_datetime64(), side="right")
        if batch and (known > sent or len(batch) == MAX_ROWS):
            yield [], batch
            batch = []
        if known > sent:
            yield [
                {"transaction_id": str(tx), "is_fraud": True}
                for tx in due[columns.transaction_id].iloc[sent:known]
            ], []
            sent = known
        batch.append(row)
    if batch:
        yield [], batch


def replay_and_compare(
    clients, served_tag: str, table: pd.DataFrame | None = None, columns: ColumnsConfig = COLUMNS
) -> None:
    """The served model's test period of `table` (default: the small table) replayed in time
    order, request by request through the clients in turn (replicas), fraud labels sent at the
    delay: every feature is training's and every decision /predict's."""
    table = read_table(SMALL_TABLE) if table is None else table
    start = pd.Timestamp(model_store.get(served_tag).metadata["test_window"]["start"])
    period = table[table[columns.timestamp] >= start].sort_values(
        [columns.timestamp, columns.transaction_id]
    )
    scored = []
    for turn, (labels, payments) in enumerate(_replay_batches(period, columns)):
        client = clients[turn % len(clients)]
        if labels:
            answer = client.post("/feedback", json={"labels": labels})
            assert answer.status_code == 200, answer.text
        if payments:
            answer = client.post(
                "/score",
                json={
                    "payments": [_payment(p, columns) for p in payments],
                    "include_features": True,
                },
            )
            assert answer.status_code == 200, answer.text
            scored += answer.json()["predictions"]
    assert len(scored) == len(period) > 5_000
    built = build_features(table, columns, 7)
    expected = built[built[columns.timestamp] >= start].reset_index(drop=True)
    assert [p["transaction_id"] for p in scored] == expected[columns.transaction_id].astype(
        str
    ).tolist()
    for name in feature_names(columns):
        np.testing.assert_allclose(
            [p["features"][name] for p in scored],
            expected[name].to_numpy(np.float32),
            rtol=1e-5,
            atol=1e-5,
            err_msg=name,
        )
    rows = request_rows(expected, columns)
    predicted = []
    for first in range(0, len(rows), MAX_ROWS):
        answer = clients[0].post("/predict", json={"transactions": rows[first : first + MAX_ROWS]})
        predicted += answer.json()["predictions"]
    np.testing.assert_allclose(
        [p["fraud_probability"] for p in scored],
        [p["fraud_probability"] for p in predicted],
        atol=1e-6,
    )
    assert [p["is_fraud"] for p in scored] == [p["is_fraud"] for p in predicted]
    assert sum(p["is_fraud"] for p in scored) > 10


def test_replayed_payments_get_trainings_features_and_predicts_decisions(pipeline, served_tag):
    replay_and_compare([pipeline], served_tag)


def _latest(pipeline) -> datetime:
    """A moment after every payment the state holds (the replay above, when it ran)."""
    return datetime(2026, 7, 25, tzinfo=UTC)


def _at_latest(pipeline, transaction_id: str, card: str, terminal: str, amount: float) -> dict:
    """A payment (the small table's columns) at `_latest`."""
    return {
        "transaction_id": transaction_id,
        "tx_datetime": _latest(pipeline).isoformat(),
        "customer_id": card,
        "terminal_id": terminal,
        "tx_amount": amount,
    }


def test_a_new_card_and_terminal_have_empty_windows(pipeline):
    payment = _at_latest(pipeline, "new-card-1", "card-never-seen", "terminal-never-seen", 12.5)
    answer = pipeline.post("/score", json={"payments": [payment], "include_features": True})
    assert answer.status_code == 200, answer.text
    features = answer.json()["predictions"][0]["features"]
    assert features["customer_nb_tx_30d"] == 0 and features["terminal_nb_tx_30d"] == 0
    assert features["customer_terminal_new_30d"] == 1
    assert features["customer_amount_ratio_30d"] == 1.0
    again = pipeline.post("/score", json={"payments": [payment], "include_features": True})
    assert again.json()["predictions"][0]["features"] == features  # a retry counts once


@pytest.mark.parametrize(
    "change, field",
    [
        ({"tx_amount": -1.0}, "tx_amount"),
        ({"tx_amount": "12"}, "tx_amount"),
        ({"tx_datetime": "yesterday"}, "tx_datetime"),
        ({"terminal_id": None}, "terminal_id"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_bad_payment_is_refused_by_field(pipeline, change, field):
    payment = {
        "transaction_id": "bad-1",
        "tx_datetime": _latest(pipeline).isoformat(),
        "customer_id": 1,
        "terminal_id": 1,
        "tx_amount": 1.0,
        **change,
    }
    answer = pipeline.post("/score", json={"payments": [payment]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"][0]["loc"][-1] == field, answer.text
    missing = {k: v for k, v in payment.items() if k != "customer_id"}
    refused = pipeline.post("/score", json={"payments": [missing]})
    assert refused.status_code == 400 and "customer_id" in refused.text


def test_the_clock_skew_and_the_horizon_are_enforced(pipeline):
    def payment(tx: str, moment: datetime) -> dict:
        return {
            "transaction_id": tx,
            "tx_datetime": moment.isoformat(),
            "customer_id": 7,
            "terminal_id": 7,
            "tx_amount": 3.0,
        }

    ahead = datetime.fromtimestamp(time.time() + 3_600, UTC)
    future = pipeline.post("/score", json={"payments": [payment("skew-1", ahead)]})
    assert future.status_code == 400 and "max_clock_skew_s" in future.text, future.text
    assert future.json()["detail"][0]["loc"] == ["payments", 0, "tx_datetime"]
    too_old = _latest(pipeline) - timedelta(seconds=60 * DAY_SECONDS)
    old = pipeline.post("/score", json={"payments": [payment("old-1", too_old)]})
    assert old.status_code == 400 and "horizon" in old.text


def test_the_columnar_form_scores_as_rows_and_names_every_problem(pipeline):
    names = ["tx_amount", "customer_id", "terminal_id", "tx_datetime", "transaction_id"]
    data = [
        [20.0, "col-card", 3, "2026-07-26T10:00:00", "col-1"],
        [35.5, "col-card", 4, "2026-07-26T10:05:00", "col-2"],
    ]
    columnar = pipeline.post(
        "/score_columns", json={"columns": names, "data": data, "include_features": True}
    )
    assert columnar.status_code == 200, columnar.text
    rows = [dict(zip(names, values, strict=True)) for values in data]
    as_rows = pipeline.post("/score", json={"payments": rows, "include_features": True})
    strip = [
        {k: v for k, v in p.items() if k != "request_id"} for p in as_rows.json()["predictions"]
    ]
    assert [
        {k: v for k, v in p.items() if k != "request_id"} for p in columnar.json()["predictions"]
    ] == strip  # the rows were retries of the columns' payments: counted once, same answers
    assert strip[1]["features"]["customer_nb_tx_1d"] == 1
    bad = pipeline.post(
        "/score_columns",
        json={
            "columns": [*names[:-1], "surprise"],
            "data": [[-1.0, "c", 3, "2026-07-26T11:00:00", 1], [1.0, "c", 3, "soon", 1]],
        },
    )
    assert bad.status_code == 400
    locations = [d["loc"] for d in bad.json()["detail"]]
    assert ["data", 0, "tx_amount"] in locations and ["data", 1, "tx_datetime"] in locations
    assert locations.count(["columns"]) == 2  # 'surprise' is not a field, 'transaction_id' missing
    uneven = pipeline.post("/score_columns", json={"columns": names, "data": [data[0][:-1]]})
    assert uneven.status_code == 400 and uneven.json()["detail"][0]["loc"] == ["data", 0]


def test_the_prediction_log_records_which_endpoint_decided(pipeline, served_tag, transactions):
    payment = _at_latest(pipeline, "logged-score-1", "logged-card", "logged-terminal", 9.0)
    scored = pipeline.post("/score", json={"payments": [payment]}, headers={"X-Request-ID": "e-1"})
    row = {**transactions[0], "transaction_id": "logged-predict-1"}
    predicted = pipeline.post(
        "/predict", json={"transactions": [row]}, headers={"X-Request-ID": "e-2"}
    )
    assert scored.status_code == predicted.status_code == 200
    query = "SELECT transaction_id, endpoint FROM predictions WHERE request_id IN ('e-1', 'e-2')"
    deadline = time.monotonic() + 20
    while True:
        with sqlite3.connect(pipeline.monitoring_directory / "feedback.db") as db:
            logged = dict(db.execute(query).fetchall())
        if len(logged) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert logged == {"logged-score-1": "score", "logged-predict-1": "http"}
