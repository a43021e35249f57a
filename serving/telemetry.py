"""Prometheus metrics (through `bentoml.metrics`, so they aggregate across workers) and the
in-worker summary behind GET /stats."""

from __future__ import annotations

import asyncio
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
LOOP_LAG = bentoml.metrics.Histogram(
    name="fraud_event_loop_lag_seconds",
    documentation="How late the worker's event loop ran a 10 ms timer (its stalls).",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
GC_PAUSE = bentoml.metrics.Histogram(
    name="fraud_gc_pause_seconds",
    documentation="Garbage collection pauses of the worker, by generation.",
    labelnames=["generation"],
    buckets=(0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
)
DRIFT_LEVELS = {"NO_DRIFT": 0, "POSSIBLE_DRIFT": 1, "DRIFT": 2}


def record_realized(realized) -> None:
    tag = realized.model_tag
    _PRECISION[tag] = realized.precision
    if _ROLES and {_ROLES["champion"], _ROLES["challenger"]} <= _PRECISION.keys():
        gap = _PRECISION[_ROLES["champion"]] - _PRECISION[_ROLES["challenger"]]
        CHALLENGER_PRECISION_GAP.set(gap)
    REALIZED_PRECISION.labels(model_tag=tag).set(realized.precision)
    REALIZED_RECALL.labels(model_tag=tag).set(realized.recall)
    REALIZED_PR_AUC.labels(model_tag=tag).set(realized.pr_auc)
    LABELLED_PREDICTIONS.labels(model_tag=tag).set(realized.labelled)


CHALLENGER_PRECISION_GAP = bentoml.metrics.Gauge(
    name="fraud_challenger_precision_gap",
    documentation="Champion's realized precision minus the challenger's, on the same labelled "
    "transactions (0 without a challenger; NaN while undefined).",
    multiprocess_mode="mostrecent",
)
CHALLENGER_CANARY_SHARE = bentoml.metrics.Gauge(
    name="fraud_challenger_canary_share",
    documentation="Share of transactions the challenger decides (0: shadow or no challenger).",
    multiprocess_mode="mostrecent",
)


# The champion's and challenger's tags, and their latest realized precision, for the gap.
_ROLES: dict[str, str] = {}
_PRECISION: dict[str, float] = {}


def record_roles(champion_tag: str, challenger_tag: str, canary_share: float) -> None:
    _ROLES.update(champion=champion_tag, challenger=challenger_tag)
    CHALLENGER_CANARY_SHARE.set(canary_share)
    CHALLENGER_PRECISION_GAP.set(float("nan"))


def record_feedback(result) -> None:
    FEEDBACK_LABELS.labels(outcome="matched").inc(result.matched)
    FEEDBACK_LABELS.labels(outcome="unknown").inc(len(result.unknown))
    FEEDBACK_LABELS.labels(outcome="ambiguous").inc(len(result.ambiguous))


def record_drift(report: dict) -> None:
    """The gauges of a drift report (`monitoring.profiler.DriftReport.as_dict()`)."""
    DRIFT_DETECTED.set(1 if report["drift_detected"] else 0)
    for feature in report["features"]:
        name = feature["feature"]
        DRIFT_STATISTIC.labels(feature=name).set(feature["statistic"])
        DRIFT_P_VALUE.labels(feature=name).set(feature["p_value"])
        DRIFT_CATEGORY.labels(feature=name).set(DRIFT_LEVELS[feature["category"]])


def observe_loop(lags: list[float], gc_pauses: list[tuple[float, int]]) -> None:
    if lags:
        observe_many(LOOP_LAG, np.array(lags))
    for seconds, generation in gc_pauses:
        GC_PAUSE.labels(generation=str(generation)).observe(seconds)


# Counters the monitoring process (and the worker's hand-off to it) add to, by metric name
# (monitoring/channel.py, `Counted`): a new one is declared above and registered here.
COUNTED = {
    "fraud_profiling_dropped_rows": PROFILING_DROPPED,
    "fraud_prediction_log_dropped_rows": PREDICTION_LOG_DROPPED,
}


def count(metric: str, value: float) -> None:
    """Add to a counter the monitoring side keeps (an unknown name is a programming error)."""
    COUNTED[metric].inc(value)


def observe_many(histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every value, as one increment per bucket: each observe takes a
    lock and writes a multiprocess file value, too much per scored row at thousands of rows a
    second. Uses prometheus_client's per-bucket values (pinned version; tested)."""
    bounds = histogram._upper_bounds
    slots = np.minimum(np.searchsorted(bounds, values, side="left"), len(bounds) - 1)
    for bucket, count in zip(
        histogram._buckets, np.bincount(slots, minlength=len(bounds)).tolist(), strict=True
    ):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum(dtype=np.float64)))


class _BentoHttpMetrics:
    """BentoML's own per-request HTTP metrics (`bentoml_service_request_total` and
    `_request_duration_seconds`, same names, labels and buckets as its traffic middleware), for
    the scoring requests that the lean path answers before that middleware: dashboards and
    alerts see every request. Unregistered objects: the multiprocess files carry the values and
    /metrics merges them with BentoML's own."""

    def __init__(self) -> None:
        import prometheus_client
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.context import server_context

        labels = ["endpoint", "service_name", "service_version", "http_response_code"]
        labels.append("runner_name")
        namespace = BentoMLContainer.api_server_config.metrics.namespace.get()
        self.total = prometheus_client.Counter(
            "request_total",
            "Total number of runner RPC",
            labels,
            namespace=namespace,
            registry=None,
        )
        self.duration = prometheus_client.Histogram(
            "request_duration_seconds",
            "runner RPC duration in seconds",
            labels,
            namespace=namespace,
            buckets=BentoMLContainer.duration_buckets.get(),
            registry=None,
        )
        self.context = server_context

    def record(self, endpoint: str, status: int, seconds: list[float]) -> None:
        context = self.context
        labels = (
            endpoint,
            context.bento_name,
            context.bento_version,
            str(status),
            context.service_name,
        )
        self.total.labels(*labels).inc(len(seconds))
        observe_many(self.duration.labels(*labels), np.array(seconds))


class ScoringTally:
    """Scored requests and transactions, added up in the worker and written to the Prometheus
    values by `flush` (a few times a second, and before this worker answers /metrics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._scores: dict[str, list[np.ndarray]] = {}
        self._frauds: Counter[str] = Counter()
        self._batches: list[tuple[int, int]] = []
        self._http: dict[tuple[str, int], list[float]] = {}
        self._bento_http: _BentoHttpMetrics | None = None

    def add_http(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._http.setdefault((endpoint, status), []).append(seconds)

    def add_batch(self, rows: int, requests: int) -> None:
        with self._lock:
            self._batches.append((rows, requests))

    def add(self, protocol: str, model_tag: str, scores: np.ndarray, frauds: int) -> None:
        with self._lock:
            self._requests[(protocol, "ok")] += 1
            self._scores.setdefault(model_tag, []).append(scores)
            self._frauds[model_tag] += frauds

    def add_scores(self, model_tag: str, scores: np.ndarray, frauds: int) -> None:
        """Scores of a model that did not answer the request (a shadow challenger)."""
        with self._lock:
            self._scores.setdefault(model_tag, []).append(scores)
            self._frauds[model_tag] += frauds

    def add_outcome(self, protocol: str, outcome: str) -> None:
        with self._lock:
            self._requests[(protocol, outcome)] += 1

    def flush(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, Counter()
            scores, self._scores = self._scores, {}
            frauds, self._frauds = self._frauds, Counter()
            batches, self._batches = self._batches, []
            http, self._http = self._http, {}
        if http:
            if self._bento_http is None:
                self._bento_http = _BentoHttpMetrics()
            for (endpoint, status), seconds in http.items():
                self._bento_http.record(endpoint, status, seconds)
        if batches:
            sizes = np.array(batches, dtype=np.float64)
            observe_many(BATCH_ROWS, sizes[:, 0])
            observe_many(BATCH_REQUESTS, sizes[:, 1])
        for (protocol, outcome), count in requests.items():
            REQUESTS.labels(protocol=protocol, outcome=outcome).inc(count)
        for tag, parts in scores.items():
            values = np.concatenate(parts)
            observe_many(PREDICTION_SCORE.labels(model_tag=tag), values)
            DECISIONS.labels(model_tag=tag, decision="fraud").inc(frauds[tag])
            DECISIONS.labels(model_tag=tag, decision="genuine").inc(len(values) - frauds[tag])


TALLY = ScoringTally()
FLUSH_EVERY_S = 0.5


async def flush_tally_periodically() -> None:
    """Write the tally to Prometheus twice a second (each worker; a scrape may reach another)."""
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        TALLY.flush()


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
    TALLY.add_outcome(protocol, "invalid")
    STATS.record_error("invalid_input")


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}
