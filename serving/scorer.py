"""Scoring shared by every protocol: validate, batch, score, decide, record."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from serving import telemetry
from serving.batching import AdaptiveBatcher, Overloaded
from serving.errors import InvalidInput
from serving.runtime import FraudModel
from settings import ServingConfig


class Scorer:
    def __init__(
        self,
        model: FraudModel,
        config: ServingConfig,
        on_scored: Callable[[np.ndarray, np.ndarray], None] = lambda matrix, scores: None,
    ):
        self.model = model
        self._on_scored = on_scored
        self.max_rows = config.max_rows_per_request
        self.batcher = AdaptiveBatcher(
            model.predict_proba,
            max_batch_size=config.max_batch_size,
            max_latency_ms=config.max_latency_ms,
            on_batch=self._on_batch,
        )
        telemetry.MODEL_INFO.labels(
            model_tag=model.tag,
            feature_hash=model.stored.labels.get("feature_hash", ""),
            sha256=model.stored.labels.get("sha256", ""),
            engine=model.engine,
        ).set(1)

    @staticmethod
    def _on_batch(rows: int, requests: int) -> None:
        telemetry.BATCH_ROWS.observe(rows)
        telemetry.BATCH_REQUESTS.observe(requests)
        telemetry.STATS.record_batch(rows)

    async def score(self, matrix: np.ndarray, protocol: str) -> np.ndarray:
        """Fraud probabilities of a [N, n_features] matrix; InvalidInput or Overloaded."""
        started = time.perf_counter()
        try:
            self.model.validate(matrix, self.max_rows)
        except InvalidInput as error:
            telemetry.record_rejection(protocol, {v.field for v in error.violations})
            raise
        try:
            probabilities = await self.batcher.score(matrix)
        except Overloaded:
            telemetry.REQUESTS.labels(protocol=protocol, outcome="overloaded").inc()
            telemetry.STATS.record_error("overloaded")
            raise
        self._on_scored(matrix, probabilities)
        frauds = int((probabilities >= self.model.threshold).sum())
        tag = self.model.tag
        for probability in probabilities:
            telemetry.PREDICTION_SCORE.labels(model_tag=tag).observe(float(probability))
        telemetry.DECISIONS.labels(model_tag=tag, decision="fraud").inc(frauds)
        telemetry.DECISIONS.labels(model_tag=tag, decision="genuine").inc(
            len(probabilities) - frauds
        )
        telemetry.REQUESTS.labels(protocol=protocol, outcome="ok").inc()
        telemetry.STATS.record_request(
            protocol, len(probabilities), frauds, time.perf_counter() - started
        )
        return probabilities

    def shutdown(self) -> None:
        self.batcher.shutdown()
