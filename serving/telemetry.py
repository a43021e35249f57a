"""Prometheus metrics (through `bentoml.metrics`, so they aggregate across workers) and the
in-worker summary behind GET /stats."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import bentoml
import numpy as np

SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

PREDICTION_SCORE = bentoml.metrics.Histogram(
    name="fraud_prediction_score",
    documentation="Fraud probability of each scored transaction.",
    labelnames=["model_tag"],
    buckets=SCORE_BUCKETS,
)
DECISIONS = bentoml.metrics.Counter(
    name="fraud_decisions",
    documentation="Scored transactions by decision at the model's threshold.",
    labelnames=["model_tag", "decision"],
)
VALIDATION_FAILURES = bentoml.metrics.Counter(
    name="fraud_validation_failures",
    documentation="Rejected inputs by field (unknown names are counted as 'unknown_field').",
    labelnames=["protocol", "field"],
)
REQUESTS = bentoml.metrics.Counter(
    name="fraud_requests",
    documentation="Scoring requests by protocol and outcome.",
    labelnames=["protocol", "outcome"],
)
BATCH_ROWS = bentoml.metrics.Histogram(
    name="fraud_batch_rows",
    documentation="Rows per forest evaluation (adaptive micro-batching).",
    buckets=BATCH_BUCKETS,
)
BATCH_REQUESTS = bentoml.metrics.Histogram(
    name="fraud_batch_requests",
    documentation="Requests merged into one forest evaluation.",
    buckets=BATCH_BUCKETS,
)
MODEL_INFO = bentoml.metrics.Gauge(
    name="fraud_model_info",
    documentation="The served model (value 1), with its tag, feature hash and engine.",
    labelnames=["model_tag", "feature_hash", "sha256", "engine"],
    multiprocess_mode="max",
)
DRIFT_DETECTED = bentoml.metrics.Gauge(
    name="fraud_drift_detected",
    documentation="1 when the latest profiling window drifted from the reference on any feature.",
    multiprocess_mode="max",
)
DRIFT_STATISTIC = bentoml.metrics.Gauge(
    name="fraud_drift_statistic",
    documentation="Drift test statistic of the latest window (KS distance or Cramér's V).",
    labelnames=["feature"],
    multiprocess_mode="max",
)
DRIFT_P_VALUE = bentoml.metrics.Gauge(
    name="fraud_drift_p_value",
    documentation="Drift test p-value of the latest window.",
    labelnames=["feature"],
    multiprocess_mode="min",
)
DRIFT_CATEGORY = bentoml.metrics.Gauge(
    name="fraud_drift_category",
    documentation="0 no drift, 1 possible drift, 2 drift, in the latest window.",
    labelnames=["feature"],
    multiprocess_mode="max",
)
PROFILING_DROPPED = bentoml.metrics.Counter(
    name="fraud_profiling_dropped_rows",
    documentation="Scored rows not profiled because the profiler's queue was full.",
)
SECURITY_REFUSALS = bentoml.metrics.Counter(
    name="fraud_security_refusals",
    documentation="Requests refused before scoring: unauthenticated, rate_limited, too_large.",
    labelnames=["protocol", "reason"],
)
PREDICTION_LOG_DROPPED = bentoml.metrics.Counter(
    name="fraud_prediction_log_dropped_rows",
    documentation="Scored rows not written to the prediction log (queue full or store error).",
)
FEEDBACK_LABELS = bentoml.metrics.Counter(
    name="fraud_feedback_labels",
    documentation="Labels received on /feedback by outcome: matched, unknown or ambiguous id.",
    labelnames=["outcome"],
)
# Every worker reads the same prediction log, so the latest computation is the right value.
REALIZED_PRECISION = bentoml.metrics.Gauge(
    name="fraud_realized_precision",
    documentation="Precision of the served decisions on labelled predictions (NaN: undefined).",
    labelnames=["model_tag"],
    multiprocess_mode="mostrecent",
)
REALIZED_RECALL = bentoml.metrics.Gauge(
    name="fraud_realized_recall",
    documentation="Recall of the served decisions on labelled predictions (NaN: undefined).",
    labelnames=["model_tag"],
    multiprocess_mode="mostrecent",
)
REALIZED_PR_AUC = bentoml.metrics.Gauge(
    name="fraud_realized_pr_auc",
    documentation="PR-AUC (average precision) of the scores of labelled predictions.",
    labelnames=["model_tag"],
    multiprocess_mode="mostrecent",
)
LABELLED_PREDICTIONS = bentoml.metrics.Gauge(
    name="fraud_labelled_predictions",
    documentation="Labelled predictions in the realized-performance window.",
    labelnames=["model_tag"],
    multiprocess_mode="mostrecent",
)
PRECISION_FLOOR = bentoml.metrics.Gauge(
    name="fraud_realized_precision_floor",
    documentation="Configured least acceptable realized precision (the alert threshold).",
    multiprocess_mode="max",
)
DRIFT_LEVELS = {"NO_DRIFT": 0, "POSSIBLE_DRIFT": 1, "DRIFT": 2}


def record_realized(realized) -> None:
    tag = realized.model_tag
    REALIZED_PRECISION.labels(model_tag=tag).set(realized.precision)
    REALIZED_RECALL.labels(model_tag=tag).set(realized.recall)
    REALIZED_PR_AUC.labels(model_tag=tag).set(realized.pr_auc)
    LABELLED_PREDICTIONS.labels(model_tag=tag).set(realized.labelled)


def record_feedback(result) -> None:
    FEEDBACK_LABELS.labels(outcome="matched").inc(result.matched)
    FEEDBACK_LABELS.labels(outcome="unknown").inc(len(result.unknown))
    FEEDBACK_LABELS.labels(outcome="ambiguous").inc(len(result.ambiguous))


def record_drift(report) -> None:
    DRIFT_DETECTED.set(1 if report.drift_detected else 0)
    for feature in report.features:
        DRIFT_STATISTIC.labels(feature=feature.feature).set(feature.statistic)
        DRIFT_P_VALUE.labels(feature=feature.feature).set(feature.p_value)
        DRIFT_CATEGORY.labels(feature=feature.feature).set(DRIFT_LEVELS[feature.category])


class Stats:
    """Counts since start and percentiles over the latest requests of this worker."""

    def __init__(self, window: int):
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.rows = 0
        self.frauds = 0
        self._latencies: deque[float] = deque(maxlen=window)
        self._batches: deque[int] = deque(maxlen=window)

    def record_request(self, protocol: str, rows: int, frauds: int, seconds: float) -> None:
        with self._lock:
            self.requests[protocol] += 1
            self.rows += rows
            self.frauds += frauds
            self._latencies.append(seconds)

    def record_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def record_batch(self, rows: int) -> None:
        with self._lock:
            self._batches.append(rows)

    def snapshot(self) -> dict:
        with self._lock:
            latencies = np.array(self._latencies) * 1000
            batches = np.array(self._batches)
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "requests": dict(self.requests),
                "requests_total": sum(self.requests.values()),
                "rows": self.rows,
                "errors": dict(self.errors),
                "fraud_rate": self.frauds / self.rows if self.rows else 0.0,
                "latency_ms": _percentiles(latencies),
                "batch_rows": {
                    **_percentiles(batches),
                    "batches": len(batches),
                    "mean": float(batches.mean()) if len(batches) else 0.0,
                    "max": int(batches.max()) if len(batches) else 0,
                },
            }


STATS = Stats(window=10_000)


def record_rejection(protocol: str, fields: set[str]) -> None:
    """Count one rejected request and each field that made it invalid."""
    for name in fields:
        VALIDATION_FAILURES.labels(protocol=protocol, field=name).inc()
    REQUESTS.labels(protocol=protocol, outcome="invalid").inc()
    STATS.record_error("invalid_input")


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}
