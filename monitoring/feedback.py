"""Delayed fraud labels joined to the predictions they judge, and the realized accuracy.

Every scored request is appended to a prediction log (SQLite in WAL mode, so readers never block
the writer and the log survives restarts). Labels arrive days later by transaction id or request
id. One thread per process owns the connection and applies predictions and labels in arrival
order, so a label never overtakes the prediction it refers to; it writes predictions in batches,
every half second. Recording a prediction only
appends to a bounded queue: under overload the log drops rows (counted), never requests.
"""

from __future__ import annotations

import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score

logger = logging.getLogger("fraud_bento.feedback")

# Indexes cost ~1.5 us per inserted row each, so only what label lookups need is indexed:
# every transaction id, the first row of each request, and labelled rows by time.
SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    request_rows INTEGER NOT NULL,
    transaction_id TEXT,
    model_tag TEXT NOT NULL,
    score REAL NOT NULL,
    decision INTEGER NOT NULL,
    scored_at REAL NOT NULL,
    label INTEGER,
    label_time REAL,
    labelled_at REAL
);
CREATE INDEX IF NOT EXISTS predictions_by_transaction ON predictions (transaction_id);
CREATE INDEX IF NOT EXISTS requests_by_id ON predictions (request_id) WHERE position = 0;
CREATE INDEX IF NOT EXISTS labelled_by_time ON predictions (model_tag, scored_at)
    WHERE label IS NOT NULL;
"""
SCHEMA_VERSION = 1
PURGE_EVERY_S = 3600.0
FLUSH_EVERY_S = 0.5
INSERT_PREDICTIONS = (
    "INSERT INTO predictions (request_id, position, request_rows, transaction_id, model_tag,"
    " score, decision, scored_at) VALUES"
)
ROW_PLACEHOLDER = "(?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_CHUNK_ROWS = 4000  # 8 values a row, within SQLite's 32,766 bound variables


class IncompatibleLog(RuntimeError):
    """The prediction log file was written by another schema version."""


@dataclass(frozen=True)
class ScoredRequest:
    """What the log keeps of one scored request (no feature values)."""

    request_id: str
    model_tag: str
    scores: np.ndarray
    decisions: np.ndarray
    transaction_ids: list[str | None] | None = None
    scored_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Label:
    label: bool
    transaction_id: str | None = None
    request_id: str | None = None
    label_time: float | None = None

    @property
    def key(self) -> str:
        return self.transaction_id if self.transaction_id is not None else self.request_id


@dataclass(frozen=True)
class FeedbackResult:
    received: int
    matched: int
    unknown: list[str]
    ambiguous: list[str]


@dataclass(frozen=True)
class RealizedPerformance:
    """Accuracy of the served model's decisions on the labelled predictions of the window."""

    model_tag: str
    window_days: float
    labelled: int
    frauds: int
    precision: float
    recall: float
    pr_auc: float

    def as_dict(self) -> dict:
        def finite(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "model_tag": self.model_tag,
            "window_days": self.window_days,
            "labelled": self.labelled,
            "frauds": self.frauds,
            "precision": finite(self.precision),
            "recall": finite(self.recall),
            "pr_auc": finite(self.pr_auc),
        }


def realized_performance(
    model_tag: str, window_days: float, labels: np.ndarray, scores: np.ndarray, decisions
) -> RealizedPerformance:
    """Precision and recall at the served decisions, PR-AUC of the scores; NaN when undefined."""
    labels = np.asarray(labels, dtype=bool)
    decisions = np.asarray(decisions, dtype=bool)
    true_positives = int((labels & decisions).sum())
    flagged, frauds = int(decisions.sum()), int(labels.sum())
    has_both_classes = 0 < frauds < len(labels)
    return RealizedPerformance(
        model_tag=model_tag,
        window_days=window_days,
        labelled=len(labels),
        frauds=frauds,
        precision=true_positives / flagged if flagged else math.nan,
        recall=true_positives / frauds if frauds else math.nan,
        pr_auc=float(average_precision_score(labels, scores)) if has_both_classes else math.nan,
    )


class FeedbackStore:
    def __init__(
        self,
        path: Path,
        *,
        model_tag: str,
        window_days: float,
        retention_days: float,
        max_queued_rows: int,
        on_realized: Callable[[RealizedPerformance], None] = lambda realized: None,
        on_drop: Callable[[int], None] = lambda rows: None,
        on_labels: Callable[[FeedbackResult], None] = lambda result: None,
    ):
        self.path = path
        self._model_tag = model_tag
        self._window_days = window_days
        self._retention_s = retention_days * 86400
        self._max_rows = max_queued_rows
        self._on_realized = on_realized
        self._on_drop = on_drop
        self._on_labels = on_labels
        self._queue: queue.Queue = queue.Queue()
        self._queued_rows = 0
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")  # other worker processes share the file
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        has_table = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'predictions'"
        ).fetchone()
        if has_table and version != SCHEMA_VERSION:
            self._db.close()
            raise IncompatibleLog(
                f"{path}: prediction log schema {version}, this service writes"
                f" {SCHEMA_VERSION}; move the file aside or set FRAUD_MONITORING__FEEDBACK_DB"
            )
        self._db.executescript(SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._last_purge = 0.0
        self.realized = self._refresh_realized()
        self._thread = threading.Thread(target=self._run, name="feedback-store", daemon=True)
        self._thread.start()

    def record(self, scored: ScoredRequest) -> None:
        rows = len(scored.scores)
        with self._lock:
            if self._queued_rows + rows > self._max_rows:
                self._on_drop(rows)
                return
            self._queued_rows += rows
        self._queue.put(scored)

    def submit_labels(self, labels: list[Label]) -> Future:
        """A future of the FeedbackResult, resolved once the labels are committed."""
        done: Future = Future()
        self._queue.put((labels, done))
        return done

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._db.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, ScoredRequest):
                # One transaction for many requests: waking per request costs the event loop
                # a GIL hand-over each time.
                time.sleep(FLUSH_EVERY_S)
            pending = [item]
            while item is not None:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                pending.append(item)
            self._apply(pending)
            if pending[-1] is None:
                return

    def _apply(self, pending: list) -> None:
        predictions = [item for item in pending if isinstance(item, ScoredRequest)]
        with self._lock:
            self._queued_rows -= sum(len(p.scores) for p in predictions)
        try:
            self._insert(predictions)
        except sqlite3.Error:
            logger.exception("feedback store: cannot log %d predictions", len(predictions))
            self._on_drop(sum(len(p.scores) for p in predictions))
        for item in pending:
            if isinstance(item, tuple):
                labels, done = item
                try:
                    result = self._label(labels)
                    self.realized = self._refresh_realized()
                except sqlite3.Error as error:
                    logger.exception("feedback store: cannot record labels in %s", self.path)
                    done.set_exception(error)
                    continue
                self._on_labels(result)
                done.set_result(result)
        if time.time() - self._last_purge > PURGE_EVERY_S:
            try:
                self._purge()
            except sqlite3.Error:
                logger.exception("feedback store: cannot purge old predictions")

    def _insert(self, predictions: list[ScoredRequest]) -> None:
        if not predictions:
            return
        rows = []
        for scored in predictions:
            count = len(scored.scores)
            rows += zip(
                repeat(scored.request_id, count),
                range(count),
                repeat(count, count),
                scored.transaction_ids or repeat(None, count),
                repeat(scored.model_tag, count),
                scored.scores.tolist(),
                scored.decisions.astype(int).tolist(),
                repeat(scored.scored_at, count),
                strict=True,
            )
        # Multi-row INSERTs: sqlite3 releases and retakes the GIL at every statement step, and
        # each retake waits for the busy event loop; one step per chunk, not per row.
        with self._db:
            self._db.execute("BEGIN")
            for start in range(0, len(rows), INSERT_CHUNK_ROWS):
                chunk = rows[start : start + INSERT_CHUNK_ROWS]
                self._db.execute(
                    f"{INSERT_PREDICTIONS} {', '.join([ROW_PLACEHOLDER] * len(chunk))}",
                    [value for row in chunk for value in row],
                )

    def _label(self, labels: list[Label]) -> FeedbackResult:
        now = time.time()
        unknown, ambiguous, matched = [], [], 0
        with self._db:
            self._db.execute("BEGIN")
            for item in labels:
                values = (int(item.label), item.label_time or now, now)
                if item.transaction_id is not None:
                    updated = self._db.execute(
                        "UPDATE predictions SET label = ?, label_time = ?, labelled_at = ?"
                        " WHERE transaction_id = ?",
                        (*values, item.transaction_id),
                    ).rowcount
                else:
                    requests = self._db.execute(
                        "SELECT rowid, request_rows FROM predictions"
                        " WHERE request_id = ? AND position = 0",
                        (item.request_id,),
                    ).fetchall()
                    if any(rows > 1 for _, rows in requests):
                        ambiguous.append(item.request_id)  # a label names one transaction
                        continue
                    updated = self._db.executemany(
                        "UPDATE predictions SET label = ?, label_time = ?, labelled_at = ?"
                        " WHERE rowid = ?",
                        [(*values, rowid) for rowid, _ in requests],
                    ).rowcount
                if updated:
                    matched += 1
                else:
                    unknown.append(item.key)
        return FeedbackResult(len(labels), matched, unknown, ambiguous)

    def _refresh_realized(self) -> RealizedPerformance:
        since = time.time() - self._window_days * 86400
        rows = self._db.execute(
            "SELECT label, score, decision FROM predictions"
            " WHERE label IS NOT NULL AND model_tag = ? AND scored_at >= ?",
            (self._model_tag, since),
        ).fetchall()
        table = np.array(rows, dtype=np.float64).reshape(-1, 3)
        realized = realized_performance(
            self._model_tag, self._window_days, table[:, 0], table[:, 1], table[:, 2]
        )
        self._on_realized(realized)
        return realized

    def _purge(self) -> None:
        self._last_purge = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM predictions WHERE scored_at < ?", (time.time() - self._retention_s,)
            )
