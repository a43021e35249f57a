"""Delayed fraud labels joined to the predictions they judge, and the realized accuracy.

Every scored request is appended to the prediction log (monitoring/prediction_log.py: a SQLite
file, or PostgreSQL shared by a fleet). Labels arrive days later by transaction id or request id.
One thread per process owns the log and applies predictions and labels in arrival order, so a
label never overtakes the prediction it refers to; it writes predictions in batches, every half
second. Recording a prediction only appends to a bounded queue: under overload, or while the
database is down, rows wait up to that bound, then are dropped (counted), never requests. Writes
resume by themselves when the database is back. Realized figures are read back from the log
periodically, so with a shared database every replica reports the fleet's.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from monitoring.budget import RowBudget
from monitoring.prediction_log import LogUnavailable, PredictionLog

logger = logging.getLogger("fraud_bento.feedback")

PURGE_EVERY_S = 3600.0
FLUSH_EVERY_S = 0.5
RETRY_EVERY_S = 2.0
AVAILABLE, DEGRADED = "available", "degraded"


@dataclass(frozen=True)
class ScoredRequest:
    """What the log keeps of one scored request (no feature values)."""

    request_id: str
    model_tag: str
    endpoint: str  # the protocol that decided it (serving's metric label: http, score, ...)
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

    @classmethod
    def given(cls, is_fraud: bool, transaction_id=None, request_id=None, label_time=None) -> Label:
        """A label as /feedback takes it (`label_time` a datetime, or none)."""
        seconds = label_time.timestamp() if label_time is not None else None
        return cls(is_fraud, transaction_id, request_id, seconds)


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
    # imported here: scikit-learn is a second of every importer's start (the service's
    # supervisor, the monitoring process), and only this figure needs it
    from sklearn.metrics import average_precision_score

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
        log: PredictionLog,
        *,
        model_tag: str,
        window_days: float,
        retention_days: float,
        max_queued_rows: int,
        realized_refresh_s: float = 60.0,
        on_realized: Callable[[RealizedPerformance], None] = lambda realized: None,
        on_drop: Callable[[int], None] = lambda rows: None,
        on_written: Callable[[int], None] = lambda rows: None,
        on_labels: Callable[[FeedbackResult], None] = lambda result: None,
        on_state: Callable[[str], None] = lambda state: None,
        challenger_tag: str | None = None,
    ):
        self.log = log
        self._model_tag = model_tag
        # realized figures are kept for the champion and, when one serves, the challenger
        self._tags = [model_tag] + ([challenger_tag] if challenger_tag else [])
        self._window_days = window_days
        self._retention_s = retention_days * 86400
        self._refresh_s = realized_refresh_s
        self._on_realized = on_realized
        self._on_drop = on_drop
        self._on_written = on_written
        # waiting in the queue or for the database to come back
        self._budget = RowBudget(max_queued_rows, on_drop)
        self._on_labels = on_labels
        self._on_state = on_state
        self._queue: queue.Queue = queue.Queue()
        self._unwritten: list[ScoredRequest] = []
        self.state = AVAILABLE
        self._last_purge = 0.0
        self._last_refresh = 0.0
        self.realized = realized_performance(model_tag, window_days, [], [], [])
        self.realized_by_tag = {
            tag: realized_performance(tag, window_days, [], [], []) for tag in self._tags
        }
        self._refresh_realized()
        self._thread = threading.Thread(target=self._run, name="feedback-store", daemon=True)
        self._thread.start()

    def record(self, scored: ScoredRequest) -> None:
        if self._budget.take(len(scored.scores)):
            self._queue.put(scored)

    def submit_labels(self, labels: list[Label]) -> Future:
        """A future of the FeedbackResult, resolved once the labels are committed."""
        done: Future = Future()
        self._queue.put((labels, done))
        return done

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self.log.close()

    def _set_state(self, state: str, error: Exception | None = None) -> None:
        if state != self.state:
            self.state = state
            if state == DEGRADED:
                logger.error("prediction log degraded: %s; rows wait and retry", error)
            else:
                logger.warning("prediction log %s available again", self.log.description)
            self._on_state(state)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=RETRY_EVERY_S)
            except queue.Empty:
                self._maintain()
                continue
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
        self._unwritten += [item for item in pending if isinstance(item, ScoredRequest)]
        self._write()
        for item in pending:
            if isinstance(item, tuple):
                labels, done = item
                try:
                    result = self._label(labels)
                except (LogUnavailable, *self.log.driver_errors) as error:
                    logger.error("cannot record labels in %s: %s", self.log.description, error)
                    done.set_exception(error)
                    continue
                self._refresh_realized()
                self._on_labels(result)
                done.set_result(result)
        self._maintain()

    def _maintain(self) -> None:
        """Retry unwritten rows, refresh the realized figures, purge old rows, when due."""
        if self._unwritten:
            self._write()
        now = time.time()
        if now - self._last_refresh >= self._refresh_s:
            self._refresh_realized()
        if now - self._last_purge > PURGE_EVERY_S and self.state == AVAILABLE:
            self._last_purge = now
            try:
                self.log.purge(now - self._retention_s)
            except (LogUnavailable, *self.log.driver_errors):
                logger.exception("feedback store: cannot purge old predictions")

    def _write(self) -> None:
        if not self._unwritten:
            return
        rows = []
        for scored in self._unwritten:
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
                repeat(scored.endpoint, count),
                strict=True,
            )
        try:
            self._on_written(self.log.insert(rows))
        except LogUnavailable as error:
            self._set_state(DEGRADED, error)
            return  # kept, and counted against the bound, until the database is back
        except self.log.driver_errors:
            logger.exception("feedback store: cannot log %d predictions", len(rows))
            self._on_drop(len(rows))
        self._budget.release(len(rows))
        self._unwritten = []
        self._set_state(AVAILABLE)

    def _label(self, labels: list[Label]) -> FeedbackResult:
        now = time.time()
        by_transaction = [item for item in labels if item.transaction_id is not None]
        by_request = [item for item in labels if item.transaction_id is None]
        matched = self.log.label_transactions(
            [(i.transaction_id, int(i.label), i.label_time or now, now) for i in by_transaction]
        ) + self.log.label_requests(
            [(i.request_id, int(i.label), i.label_time or now, now) for i in by_request]
        )
        unknown, ambiguous = [], []
        for item, rows in zip([*by_transaction, *by_request], matched, strict=True):
            if rows is None:
                ambiguous.append(item.request_id)
            elif rows == 0:
                unknown.append(item.key)
        return FeedbackResult(
            len(labels), len(labels) - len(unknown) - len(ambiguous), unknown, ambiguous
        )

    def _refresh_realized(self) -> None:
        self._last_refresh = time.time()
        since = self._last_refresh - self._window_days * 86400
        for tag in self._tags:
            try:
                rows = self.log.labelled(tag, since)
            except LogUnavailable as error:
                self._set_state(DEGRADED, error)
                return
            table = np.array(rows, dtype=np.float64).reshape(-1, 3)
            realized = realized_performance(
                tag, self._window_days, table[:, 0], table[:, 1], table[:, 2]
            )
            self.realized_by_tag[tag] = realized
            if tag == self._model_tag:
                self.realized = realized
            self._on_realized(realized)
