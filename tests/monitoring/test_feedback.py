"""The prediction log and delayed labels, on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score

from monitoring.feedback import DEGRADED, FeedbackStore, Label, ScoredRequest
from monitoring.prediction_log import (
    SCHEMA_VERSION,
    IncompatibleLog,
    PostgresLog,
    SqliteLog,
)
from tests.conftest import fresh_database

TAG = "fraud_rf:test"


@pytest.fixture
def pg_url(request, postgres) -> str:
    return fresh_database(postgres, f"t{abs(hash(request.node.name)) % 10**9}")


@pytest.fixture(params=["sqlite", "postgres"])
def log_place(request, tmp_path):
    """Where a test's prediction log lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "feedback.db"
    return request.getfixturevalue("pg_url")


def _open(place):
    return SqliteLog(place) if isinstance(place, Path) else PostgresLog(place)


def _store(place, **overrides) -> FeedbackStore:
    options = dict(model_tag=TAG, window_days=30, retention_days=90, max_queued_rows=10_000)
    return FeedbackStore(_open(place), **{**options, **overrides})


def _scored(request_id, scores, transaction_ids=None, threshold=0.5) -> ScoredRequest:
    scores = np.asarray(scores, dtype=np.float64)
    return ScoredRequest(request_id, TAG, "http", scores, scores >= threshold, transaction_ids)


def test_labels_join_predictions_by_transaction_or_request_id(log_place):
    store = _store(log_place)
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


def test_acknowledged_labels_survive_a_restart(log_place):
    path = log_place
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


def test_undefined_metrics_are_nan_and_other_models_are_not_counted(log_place):
    store = _store(log_place)
    store.record(_scored("r1", [0.1, 0.2], ["a", "b"]))
    store.record(
        ScoredRequest("r9", "fraud_rf:other", "oip", np.array([0.9]), np.array([True]), ["c"])
    )
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


def test_a_full_queue_drops_log_rows_and_counts_them(log_place):
    dropped = []
    store = _store(log_place, max_queued_rows=5, on_drop=dropped.append)
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


def test_a_retried_request_is_logged_and_counted_once(log_place):
    store = _store(log_place)
    for _ in range(3):  # the client retried twice with the same X-Request-ID
        store.record(_scored("retried", [0.9, 0.1], ["t1", "t2"]))
    store.record(_scored("other", [0.8], ["t3"]))
    store.record(_scored("retried", [0.3], ["t9"]))  # a reused id, other transactions: logged
    result = store.submit_labels(
        [Label(True, transaction_id="t1"), Label(False, transaction_id="t2")]
    ).result(timeout=10)
    store.close()
    assert result.matched == 2
    assert store.realized.labelled == 2  # not 6
    reopened = _open(log_place)
    assert reopened.count() == 4
    reopened.close()


def test_a_version_1_sqlite_log_is_migrated_keeping_one_row_per_retry(tmp_path):
    path = tmp_path / "feedback.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE predictions (request_id TEXT NOT NULL, position INTEGER NOT NULL,"
            " request_rows INTEGER NOT NULL, transaction_id TEXT, model_tag TEXT NOT NULL,"
            " score REAL NOT NULL, decision INTEGER NOT NULL, scored_at REAL NOT NULL,"
            " label INTEGER, label_time REAL, labelled_at REAL)"
        )
        row = ("r1", 0, 1, "t1", TAG, 0.9, 1, 1.0)
        db.executemany(
            "INSERT INTO predictions (request_id, position, request_rows, transaction_id,"
            " model_tag, score, decision, scored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [row, row, ("r2", 0, 1, None, TAG, 0.1, 0, 1.0)],
        )
        db.execute("PRAGMA user_version = 1")
    log = SqliteLog(path)
    assert log.count() == 2
    log.insert([(*row, "http")])  # the unique index holds from now on
    assert log.count() == 2
    log.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def _a_version_2_log(place) -> None:
    """A prediction log as schema v2 left it (no endpoint column), with two recent rows."""
    now = time.time()
    rows = [("r1", 0, 1, "t1", TAG, 0.9, 1, now), ("r2", 0, 1, "t2", TAG, 0.1, 0, now)]
    create = (
        "CREATE TABLE predictions (request_id TEXT NOT NULL, position INTEGER NOT NULL,"
        " request_rows INTEGER NOT NULL, transaction_id TEXT, model_tag TEXT NOT NULL,"
        " score DOUBLE PRECISION NOT NULL, decision SMALLINT NOT NULL,"
        " scored_at DOUBLE PRECISION NOT NULL, label SMALLINT, label_time DOUBLE PRECISION,"
        " labelled_at DOUBLE PRECISION)"
    )
    insert = (
        "INSERT INTO predictions (request_id, position, request_rows, transaction_id, model_tag,"
        " score, decision, scored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    if isinstance(place, Path):
        with sqlite3.connect(place) as db:
            db.execute(create)
            db.executemany(insert, rows)
            db.execute("PRAGMA user_version = 2")
        return
    with psycopg.connect(place, autocommit=True) as db:
        db.execute(create)
        db.cursor().executemany(insert.replace("?", "%s"), rows)
        db.execute("CREATE TABLE prediction_log_schema (version INTEGER NOT NULL)")
        db.execute("INSERT INTO prediction_log_schema (version) VALUES (2)")


def _endpoints(place) -> dict[str, str | None]:
    query = "SELECT transaction_id, endpoint FROM predictions"
    if isinstance(place, Path):
        with sqlite3.connect(place) as db:
            return dict(db.execute(query).fetchall())
    with psycopg.connect(place) as db:
        return dict(db.execute(query).fetchall())


def test_a_version_2_log_gains_the_endpoint_and_keeps_its_rows(log_place):
    _a_version_2_log(log_place)
    store = _store(log_place)
    store.record(
        ScoredRequest("r3", TAG, "score", np.array([0.8]), np.array([True]), ["t3"], time.time())
    )
    result = store.submit_labels([Label(True, transaction_id="t1")]).result(timeout=10)
    store.close()
    assert result.matched == 1  # a row logged before the migration is labelled
    # rows from before it say no endpoint rather than a guessed one
    assert _endpoints(log_place) == {"t1": None, "t2": None, "t3": "score"}


def _run(place, statements: list[str]) -> list[tuple]:
    """Run statements on the log's database; the last one's rows."""
    connect = sqlite3.connect if isinstance(place, Path) else psycopg.connect
    with connect(place) as db:
        for statement in statements[:-1]:
            db.execute(statement)
        return db.execute(statements[-1]).fetchall()


def test_a_version_3_log_keeps_its_rows_with_one_index_entry_a_row(log_place):
    """v3 kept a transaction index beside the uniqueness index; v4 has one index that does
    both: a migrated log keeps its rows, refuses a retry's rows and finds labels by id."""
    now = time.time()
    v3 = [
        "CREATE TABLE predictions (request_id TEXT NOT NULL, position INTEGER NOT NULL,"
        " request_rows INTEGER NOT NULL, transaction_id TEXT, model_tag TEXT NOT NULL,"
        " score DOUBLE PRECISION NOT NULL, decision SMALLINT NOT NULL,"
        " scored_at DOUBLE PRECISION NOT NULL, label SMALLINT, label_time DOUBLE PRECISION,"
        " labelled_at DOUBLE PRECISION, endpoint TEXT)",
        "CREATE INDEX predictions_by_transaction ON predictions (transaction_id)",
        "CREATE UNIQUE INDEX scored_once ON predictions"
        " (request_id, position, COALESCE(transaction_id, ''), model_tag)",
        "INSERT INTO predictions"  # noqa: S608 - the test's own constants
        " (request_id, position, request_rows, transaction_id, model_tag, score, decision,"
        f" scored_at, endpoint) VALUES ('r1', 0, 2, 't1', '{TAG}', 0.9, 1, {now}, 'http'),"
        f" ('r1', 1, 2, NULL, '{TAG}', 0.2, 0, {now}, 'http')",
    ]
    if isinstance(log_place, Path):
        _run(log_place, [*v3, "PRAGMA user_version = 3"])
    else:
        schema = "CREATE TABLE prediction_log_schema (version INTEGER NOT NULL)"
        _run(log_place, [*v3, schema, "INSERT INTO prediction_log_schema VALUES (3)", "SELECT 1"])
    store = _store(log_place)
    store.record(_scored("r1", [0.9, 0.2], ["t1", None]))  # a retry of r1: both rows known
    store.record(_scored("r2", [0.4], ["t2"]))
    result = store.submit_labels(
        [Label(True, transaction_id="t1"), Label(False, transaction_id="t2")]
    ).result(timeout=10)
    store.close()
    assert result.matched == 2
    log = _open(log_place)
    assert log.count() == 3
    log.close()
    if isinstance(log_place, Path):
        names = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'predictions'"
        plan = _run(
            log_place,
            ["EXPLAIN QUERY PLAN UPDATE predictions SET label = 1 WHERE transaction_id = 't1'"],
        )
        assert "logged_once_by_transaction" in str(plan)
    else:
        names = "SELECT indexname FROM pg_indexes WHERE tablename = 'predictions'"
    assert {name for (name,) in _run(log_place, [names])} == {
        "logged_once_by_transaction",
        "logged_once_without_transaction",
        "requests_by_id",
        "labelled_by_time",
    }


def test_a_postgres_log_of_another_version_is_refused(pg_url):
    PostgresLog(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE prediction_log_schema SET version = 9")
    with pytest.raises(IncompatibleLog, match="schema 9.*FRAUD_MONITORING__DATABASE_URL"):
        PostgresLog(pg_url)


def test_postgres_down_rows_wait_then_resume_with_nothing_lost(postgres, pg_url):
    states = []
    store = _store(pg_url, max_queued_rows=50, on_state=states.append)
    store.record(_scored("before", [0.9], ["b1"]))
    store.submit_labels([Label(True, transaction_id="b1")]).result(timeout=10)
    postgres.stop()
    try:
        store.record(_scored("during", [0.2, 0.3], ["d1", "d2"]))
        deadline = time.monotonic() + 20
        while store.state != DEGRADED and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.state == DEGRADED
        with pytest.raises(Exception, match="127.0.0.1"):
            store.submit_labels([Label(True, transaction_id="d1")]).result(timeout=20)
    finally:
        postgres.resume()
    deadline = time.monotonic() + 20
    while store.state == DEGRADED and time.monotonic() < deadline:
        time.sleep(0.2)
    assert states == [DEGRADED, "available"]
    result = store.submit_labels([Label(True, transaction_id="d1")]).result(timeout=10)
    store.close()
    assert result.matched == 1
    assert store.realized.labelled == 2  # b1, committed before the outage, and d1


def test_paired_labels_pair_each_labelled_row_with_the_challengers_score_of_it(log_place):
    """By transaction id when the request named one, else by request and position."""
    log = _open(log_place)
    now = time.time()
    challenger = "fraud_rf:challenger"

    def row(request, position, transaction, tag, score):
        return (request, position, 2, transaction, tag, score, int(score >= 0.5), now, "http")

    log.insert(
        [
            row("r1", 0, "t1", TAG, 0.9),
            row("r1", 1, None, TAG, 0.2),
            row("r1", 0, "t1", challenger, 0.8),
            row("r1", 1, None, challenger, 0.3),
            row("r2", 0, "t2", TAG, 0.6),  # the challenger did not score it: not paired
        ]
    )
    log.label_transactions([("t1", 1, now, now), ("t2", 0, now, now)])
    log.label_requests([("r1", 0, now, now)])  # two rows: ambiguous, nothing labelled
    with log._transaction() as cursor:  # a label on the row without a transaction id
        cursor.execute(
            log._sql("UPDATE predictions SET label = 0 WHERE request_id = ? AND position = 1"),
            ("r1",),
        )
    pairs = sorted(log.paired_labels(TAG, challenger, now - 60))
    log.close()
    assert pairs == [(0, pytest.approx(0.2), pytest.approx(0.3)), (1, 0.9, pytest.approx(0.8))]
