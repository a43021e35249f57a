"""The service's Prometheus metrics (through `bentoml.metrics`, so they aggregate across
workers), and what sets them from monitoring events: drift reports, realized performance, labels,
the event loop's stalls, and the counters the monitoring process keeps."""

from __future__ import annotations

import bentoml
import numpy as np

SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
PAUSE_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def _counter(name: str, documentation: str, labels: list[str] | None = None):
    return bentoml.metrics.Counter(name=name, documentation=documentation, labelnames=labels or [])


def _gauge(name: str, documentation: str, labels: list[str] | None = None, mode: str = "max"):
    """A gauge across workers: `mode` is how their values combine (BentoML's multiprocess
    mode; "mostrecent" where every worker computes the same figure from the shared log)."""
    return bentoml.metrics.Gauge(
        name=name, documentation=documentation, labelnames=labels or [], multiprocess_mode=mode
    )


def _histogram(name: str, documentation: str, buckets, labels: list[str] | None = None):
    return bentoml.metrics.Histogram(
        name=name, documentation=documentation, labelnames=labels or [], buckets=buckets
    )


PREDICTION_SCORE = _histogram(
    "fraud_prediction_score",
    "Fraud probability of each scored transaction.",
    labels=["model_tag"],
    buckets=SCORE_BUCKETS,
)
DECISIONS = _counter(
    "fraud_decisions",
    "Scored transactions by decision at the model's threshold.",
    labels=["model_tag", "decision"],
)
VALIDATION_FAILURES = _counter(
    "fraud_validation_failures",
    "Rejected inputs by field (unknown names are counted as 'unknown_field').",
    labels=["protocol", "field"],
)
REQUESTS = _counter(
    "fraud_requests", "Scoring requests by protocol and outcome.", labels=["protocol", "outcome"]
)
BATCH_ROWS = _histogram(
    "fraud_batch_rows",
    "Rows per forest evaluation (adaptive micro-batching).",
    buckets=BATCH_BUCKETS,
)
BATCH_REQUESTS = _histogram(
    "fraud_batch_requests", "Requests merged into one forest evaluation.", buckets=BATCH_BUCKETS
)
MODEL_INFO = _gauge(
    "fraud_model_info",
    "The served model (value 1), with its tag, feature hash and engine.",
    labels=["model_tag", "feature_hash", "sha256", "engine"],
    mode="max",
)
DRIFT_DETECTED = _gauge(
    "fraud_drift_detected",
    "1 when the latest profiling window drifted from the reference on any feature.",
    mode="max",
)
# Per feature, of the latest profiling window: how its values combine across workers differs.
DRIFT_BY_FEATURE = {
    name: _gauge(f"fraud_drift_{name}", documentation, ["feature"], mode)
    for name, documentation, mode in [
        (
            "statistic",
            "Drift test statistic of the latest window (KS distance or Cramér's V).",
            "max",
        ),
        ("p_value", "Drift test p-value of the latest window.", "min"),
        ("category", "0 no drift, 1 possible drift, 2 drift, in the latest window.", "max"),
    ]
}
PROFILING_DROPPED = _counter(
    "fraud_profiling_dropped_rows",
    "Scored rows not profiled because the profiler's queue was full.",
)
SECURITY_REFUSALS = _counter(
    "fraud_security_refusals",
    "Requests refused before scoring: unauthenticated, rate_limited, too_large.",
    labels=["protocol", "reason"],
)
PROFILED = _counter(
    "fraud_profiled_rows",
    "Scored rows profiled (the rest sampled out past profile_max_rows_per_s, or dropped).",
)
PREDICTION_LOG_WRITTEN = _counter(
    "fraud_prediction_log_rows",
    "Rows written to the prediction log (a retried request's rows once).",
)
PREDICTION_LOG_DROPPED = _counter(
    "fraud_prediction_log_dropped_rows",
    "Scored rows not written to the prediction log (queue full or store error).",
)
CHALLENGER_SHADOW_DROPPED = _counter(
    "fraud_challenger_shadow_dropped_rows",
    "Rows the shadow challenger did not score: too many were waiting (it fell behind); the "
    "rows it scored are fraud_decisions_total under its model_tag.",
)
FEEDBACK_LABELS = _counter(
    "fraud_feedback_labels",
    "Labels received on /feedback by outcome: matched, unknown or ambiguous id.",
    labels=["outcome"],
)
# Every worker reads the same prediction log, so the latest computation is the right value.
REALIZED = {
    figure: _gauge(name, documentation, ["model_tag"], "mostrecent")
    for figure, name, documentation in [
        (
            "precision",
            "fraud_realized_precision",
            "Precision of the served decisions on labelled predictions (NaN: undefined).",
        ),
        (
            "recall",
            "fraud_realized_recall",
            "Recall of the served decisions on labelled predictions (NaN: undefined).",
        ),
        (
            "pr_auc",
            "fraud_realized_pr_auc",
            "PR-AUC (average precision) of the scores of labelled predictions.",
        ),
        (
            "labelled",
            "fraud_labelled_predictions",
            "Labelled predictions in the realized-performance window.",
        ),
    ]
}
PRECISION_FLOOR = _gauge(
    "fraud_realized_precision_floor",
    "Configured least acceptable realized precision (the alert threshold).",
    mode="max",
)
LOOP_LAG = _histogram(
    "fraud_event_loop_lag_seconds",
    "How late the worker's event loop ran a 10 ms timer (its stalls).",
    buckets=LAG_BUCKETS,
)
GC_PAUSE = _histogram(
    "fraud_gc_pause_seconds",
    "Garbage collection pauses of the worker, by generation.",
    labels=["generation"],
    buckets=PAUSE_BUCKETS,
)
CHALLENGER_PRECISION_GAP = _gauge(
    "fraud_challenger_precision_gap",
    "Champion's realized precision minus the challenger's, on the same labelled "
    "transactions (0 without a challenger; NaN while undefined).",
    mode="mostrecent",
)
CHALLENGER_CANARY_SHARE = _gauge(
    "fraud_challenger_canary_share",
    "Share of transactions the challenger decides (0: shadow or no challenger).",
    mode="mostrecent",
)

DRIFT_LEVELS = {"NO_DRIFT": 0, "POSSIBLE_DRIFT": 1, "DRIFT": 2}
# The champion's and challenger's tags, and their latest realized precision, for the gap.
_ROLES: dict[str, str] = {}
_PRECISION: dict[str, float] = {}


def record_realized(realized) -> None:
    tag = realized.model_tag
    _PRECISION[tag] = realized.precision
    if _ROLES and {_ROLES["champion"], _ROLES["challenger"]} <= _PRECISION.keys():
        gap = _PRECISION[_ROLES["champion"]] - _PRECISION[_ROLES["challenger"]]
        CHALLENGER_PRECISION_GAP.set(gap)
    for figure, gauge in REALIZED.items():
        gauge.labels(model_tag=tag).set(getattr(realized, figure))


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
        levels = {**feature, "category": DRIFT_LEVELS[feature["category"]]}
        for figure, gauge in DRIFT_BY_FEATURE.items():
            gauge.labels(feature=name).set(levels[figure])


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
    "fraud_profiled_rows": PROFILED,
    "fraud_prediction_log_rows": PREDICTION_LOG_WRITTEN,
}


def count(metric: str, value: float) -> None:
    """Add to a counter the monitoring side keeps (an unknown name is a programming error)."""
    COUNTED[metric].inc(value)


# Where each report of the monitoring process goes (monitoring.client.Listeners's fields).
MONITORING_LISTENERS = {
    "on_drift": record_drift,
    "on_realized": record_realized,
    "on_count": count,
    "on_labels": record_feedback,
}


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
