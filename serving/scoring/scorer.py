"""Scoring shared by every protocol: validate, batch, score, decide, record."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serving.contract.refusals import InvalidInput
from serving.contract.rules import MatrixCheck
from serving.scoring.batching import AdaptiveBatcher, Overloaded
from serving.scoring.challenger import Challenger
from serving.scoring.runtime import FraudModel
from serving.telemetry import metrics, stats, traffic
from settings import ServingConfig

logger = logging.getLogger("fraud_bento.requests")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def chosen_by_client(given: str | None) -> bool:
    """Whether the caller gave a usable request id (X-Request-ID, an OIP id): then it may retry
    with it, and the prediction log keeps the request once however often it is scored."""
    return bool(given and REQUEST_ID.match(given))


def request_id_or_new(given: str | None) -> str:
    """The caller's request id when it is a sane token, else a new one: 128 random bits in hex,
    as a uuid4's hex (a fifth of its cost: it is made for every request, refusals included)."""
    return given if chosen_by_client(given) else secrets.token_hex(16)


@dataclass(frozen=True)
class ScoredRows:
    """One scored request, as handed to the monitoring listeners."""

    matrix: np.ndarray
    scores: np.ndarray
    decisions: np.ndarray
    request_id: str | None
    protocol: str  # the endpoint's name in metrics and the prediction log (http, score, ...)
    transaction_ids: list[str | None] | None
    durable: bool = False  # hand to the log before the response goes out (a retryable id)


@dataclass(frozen=True)
class Decided:
    """Per row: the deciding model's probability, its decision, threshold and tag."""

    probabilities: np.ndarray
    decisions: np.ndarray
    thresholds: np.ndarray
    tags: list[str]

    @classmethod
    def by(cls, model: FraudModel, probabilities: np.ndarray) -> Decided:
        rows = len(probabilities)
        return cls(
            probabilities,
            probabilities >= model.threshold,
            np.full(rows, model.threshold),
            [model.tag] * rows,
        )

    @property
    def model_tag(self) -> str:
        """The model that decided every row (the first row's, when a canary split them)."""
        return self.tags[0] if self.tags else ""


class Scorer:
    def __init__(
        self,
        model: FraudModel,
        config: ServingConfig,
        on_scored: Callable[[ScoredRows], None] | None = None,
        challenger: Challenger | None = None,
    ):
        self.model = model
        self.challenger = challenger
        self._on_scored = on_scored
        self.check = MatrixCheck(model.schema, config.max_rows_per_request)
        self._log_requests = config.request_log
        self.batcher = AdaptiveBatcher(
            model.predict_proba,
            max_batch_size=config.max_batch_size,
            max_latency_ms=config.max_latency_ms,
            inline_max_rows=config.inline_max_rows,
            on_batch=self._on_batch,
        )
        metrics.MODEL_INFO.labels(
            model_tag=model.tag,
            feature_hash=model.stored.labels.get("feature_hash", ""),
            sha256=model.stored.labels.get("sha256", ""),
            engine=model.engine,
        ).set(1)

    @staticmethod
    def _on_batch(rows: int, requests: int) -> None:
        traffic.TALLY.add_batch(rows, requests)
        stats.STATS.record_batch(rows)

    async def probabilities(
        self,
        matrix: np.ndarray,
        protocol: str,
        request_id: str | None = None,
        transaction_ids: list[str | None] | None = None,
        validated: bool = False,
        durable: bool = False,
    ) -> np.ndarray:
        """Fraud probabilities of a [N, n_features] matrix; InvalidInput or Overloaded (which the
        caller's transport answers and counts).

        `validated`: the caller's decoder already enforced the model's schema (types, ranges,
        row count), so the matrix is not checked a second time. Requests with a `request_id`
        are decisions and go to the prediction log as well; `durable` ones (the caller chose the
        id, so a retry after a lost answer is recognised) are handed to the monitoring process
        before this returns, so a worker killed after answering cannot lose their log rows.
        """
        started = time.perf_counter()
        try:
            if not validated:
                self.check(matrix)
        except InvalidInput as error:  # counted by the transport's refusal, as every refusal is
            self._log(protocol, request_id, len(matrix), started, "invalid", sorted(error.fields()))
            raise
        try:
            probabilities = await self.batcher.probabilities(matrix)
        except Overloaded:
            self._log(protocol, request_id, len(matrix), started, "overloaded")
            raise
        decisions = probabilities >= self.model.threshold
        if self._on_scored is not None:
            self._on_scored(
                ScoredRows(
                    matrix, probabilities, decisions, request_id, protocol, transaction_ids, durable
                )
            )
        frauds = int(decisions.sum())
        traffic.TALLY.add(protocol, self.model.tag, probabilities, frauds)
        stats.STATS.record_request(
            protocol, len(probabilities), frauds, time.perf_counter() - started
        )
        if self._log_requests:
            self._log(protocol, request_id, len(matrix), started, "ok", frauds=frauds)
        return probabilities

    async def decide(
        self,
        matrix: np.ndarray,
        protocol: str,
        request_id: str,
        transaction_ids: list[str | None] | None = None,
        validated: bool = False,
        durable: bool = False,
        version: str | None = None,
    ) -> Decided:
        """Score with the champion and, when there is one, let the challenger shadow or decide
        its canary share of the rows (or all of them when `version` addresses it)."""
        scores = await self.probabilities(
            matrix, protocol, request_id, transaction_ids, validated, durable
        )
        challenger = self.challenger
        if challenger is None:
            return Decided.by(self.model, scores)
        if version is not None and version == challenger.model.version:
            routed = np.ones(len(scores), bool)
        else:
            routed = challenger.routed(transaction_ids, request_id, len(scores))
        if routed is None or not routed.any():
            challenger.shadow(matrix, scores, request_id, protocol, transaction_ids)
            return Decided.by(self.model, scores)
        theirs = await challenger.probabilities(
            matrix, scores, request_id, protocol, transaction_ids
        )
        if theirs is None:
            return Decided.by(self.model, scores)  # the challenger failed: the champion decides
        challenger.stats.decided_rows += int(routed.sum())
        chosen = np.where(routed, theirs, scores)
        thresholds = np.where(routed, challenger.model.threshold, self.model.threshold)
        tags = [challenger.model.tag if r else self.model.tag for r in routed]
        return Decided(chosen, chosen >= thresholds, thresholds, tags)

    def _log(
        self,
        protocol: str,
        request_id: str | None,
        rows: int,
        started: float,
        outcome: str,
        invalid_fields: list[str] | None = None,
        frauds: int | None = None,
    ) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        fields = {
            "request_id": request_id,
            "model_tag": self.model.tag,
            "protocol": protocol,
            "rows": rows,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "outcome": outcome,
        }
        if invalid_fields:
            fields["invalid_fields"] = invalid_fields
        if frauds is not None:
            fields["frauds"] = frauds
        logger.info("scored" if outcome == "ok" else f"not scored: {outcome}", extra=fields)

    def shutdown(self) -> None:
        self.batcher.shutdown()
        if self.challenger is not None:
            self.challenger.shutdown()
