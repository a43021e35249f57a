"""Request accounting of the scoring path: scored requests and transactions added up in the
worker and written to Prometheus a few times a second (`ScoringTally`), BentoML's own HTTP
request metrics for the routes answered in front of its stack, and refusals by field."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import numpy as np

import bentoml_internals
from serving.telemetry import metrics
from serving.telemetry.metrics import observe_many
from serving.telemetry.stats import STATS


class _BentoHttpMetrics:
    """BentoML's own per-request HTTP metrics (`bentoml_service_request_total` and
    `_request_duration_seconds`, same names, labels and buckets as its traffic middleware), for
    the scoring requests that the lean path answers before that middleware: dashboards and
    alerts see every request. Unregistered objects: the multiprocess files carry the values and
    /metrics merges them with BentoML's own."""

    def __init__(self) -> None:
        import prometheus_client

        labels = ["endpoint", "service_name", "service_version", "http_response_code"]
        labels.append("runner_name")
        namespace, buckets = bentoml_internals.request_metrics_config()
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
            buckets=buckets,
            registry=None,
        )
        self.context = bentoml_internals.server_context()

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
            observe_many(metrics.BATCH_ROWS, sizes[:, 0])
            observe_many(metrics.BATCH_REQUESTS, sizes[:, 1])
        for (protocol, outcome), count in requests.items():
            metrics.REQUESTS.labels(protocol=protocol, outcome=outcome).inc(count)
        for tag, parts in scores.items():
            values = np.concatenate(parts)
            observe_many(metrics.PREDICTION_SCORE.labels(model_tag=tag), values)
            metrics.DECISIONS.labels(model_tag=tag, decision="fraud").inc(frauds[tag])
            metrics.DECISIONS.labels(model_tag=tag, decision="genuine").inc(
                len(values) - frauds[tag]
            )


TALLY = ScoringTally()


FLUSH_EVERY_S = 0.5


async def flush_tally_periodically() -> None:
    """Write the tally to Prometheus twice a second (each worker; a scrape may reach another)."""
    while True:
        await asyncio.sleep(FLUSH_EVERY_S)
        TALLY.flush()


def record_refusal(protocol: str, outcome: str, fields: set[str], security: bool = False) -> None:
    """Count one refused request, and each request field that made it invalid; a refusal of the
    security checks by its reason. Called by each transport's one refusal function
    (serving/http/answers.py, `grpc_server.refuse`) and by BentoML's typed endpoints' row models,
    whose refusals BentoML answers itself."""
    if security:
        metrics.SECURITY_REFUSALS.labels(protocol=protocol, reason=outcome).inc()
        return
    for name in fields:
        metrics.VALIDATION_FAILURES.labels(protocol=protocol, field=name).inc()
    TALLY.add_outcome(protocol, outcome)
    STATS.record_error(outcome)
