"""A challenger model beside the champion, to prove itself on live traffic before it decides.

Shadow mode: the challenger scores the same rows in its own thread after the champion answered;
a response never waits for it and never fails because of it (an error or a full queue is
counted, the rows are not shadowed). Requests gather for a few milliseconds, and while it
scores, and are scored as one batch: one forest call, one thread hand-off and one hand-on of
the scores (`on_scored`) per batch, not per request. By default that thread runs at idle
priority (Linux `SCHED_IDLE`): it scores with the CPU the champion leaves, so a busy core sheds
shadow rows (counted), not champion requests.
Both models' scores go to the prediction log, so delayed labels give each its realized figures
on the same transactions.

Canary mode: a share of transactions is decided by the challenger, chosen by a hash of the
transaction id (else the request id), so a retried transaction always meets the same model.
The challenger then scores every row before the answer (it is on the response path for its
share); should it fail, the champion decides those rows and the failure is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from serving.scoring.runtime import FraudModel
from serving.telemetry import metrics

logger = logging.getLogger("fraud_bento.challenger")
SHADOW, CANARY = "shadow", "canary"
# Shadowed requests gather this long before the challenger scores them in one call: handing
# each request to its thread as it came cost a thread hand-off (and a wake-up of the event loop
# when it finished) per request; gathering took the shadow's CPU per 1-transaction request from
# +24% to +17.5% of the champion's alone (measured side by side, one core).
GATHER_S = 0.005
IDLE, NORMAL = "idle", "normal"


def run_at_idle_priority() -> None:
    """The calling thread runs only when its core would otherwise idle (Linux; elsewhere the
    thread keeps its priority, and says so once)."""
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
    else:
        logger.warning("no SCHED_IDLE here: the shadow challenger competes with the champion")


def canary_share_of(keys: Sequence[str], share: float) -> np.ndarray:
    """Which keys fall in the canary share: a stable hash of each key mapped to [0, 1)."""
    if share <= 0:
        return np.zeros(len(keys), dtype=bool)
    buckets = [
        int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
        for key in keys
    ]
    return np.array(buckets) < share


@dataclass
class ShadowStats:
    """What the challenger did in this worker since start, and how it compares so far."""

    scored_rows: int = 0
    dropped_rows: int = 0
    errors: int = 0
    agreeing_rows: int = 0
    score_gap_sum: float = 0.0
    decided_rows: int = 0  # canary: rows whose decision was the challenger's

    def as_dict(self) -> dict:
        compared = max(self.scored_rows, 1)
        return {
            "scored_rows": self.scored_rows,
            "dropped_rows": self.dropped_rows,
            "errors": self.errors,
            "decided_rows": self.decided_rows,
            "decision_agreement": self.agreeing_rows / compared if self.scored_rows else None,
            "mean_abs_score_gap": self.score_gap_sum / compared if self.scored_rows else None,
        }


class ShadowedRequest(NamedTuple):
    """One request among the rows the challenger scored in one call, in their order."""

    request_id: str | None
    protocol: str
    transaction_ids: list | None
    rows: int


@dataclass
class Challenger:
    model: FraudModel
    champion_threshold: float
    mode: str
    canary_share: float
    max_queued_rows: int
    shadow_priority: str  # IDLE or NORMAL
    # per call: the scores and decisions of every row, and the requests they came in
    on_scored: Callable[[np.ndarray, np.ndarray, list[ShadowedRequest]], None]
    stats: ShadowStats = field(default_factory=ShadowStats)

    def __post_init__(self) -> None:
        # Canary rows (and requests addressed to the challenger) are on the response path at the
        # champion's priority; the shadow has its own thread, at idle priority unless told.
        self._engine = ThreadPoolExecutor(1, thread_name_prefix="challenger")
        idle = self.shadow_priority == IDLE
        self._shadow_engine = ThreadPoolExecutor(
            1, "challenger-shadow", initializer=run_at_idle_priority if idle else None
        )
        # What waits to be shadowed, request by request (plain lists: per request, the event
        # loop only appends; everything else is done once per batch)
        self._matrices: list[np.ndarray] = []
        self._champion_scores: list[np.ndarray] = []
        self._requests: list[ShadowedRequest] = []
        self._queued = 0  # rows waiting or being scored
        self._drain: asyncio.Task | None = None

    def routed(self, transaction_ids: Sequence[str | None] | None, request_id: str, rows: int):
        """Rows the challenger decides: its canary share, keyed by transaction id (else the
        request id); None in shadow mode."""
        if self.mode != CANARY:
            return None
        keys = [tx or request_id for tx in transaction_ids or [None] * rows]
        return canary_share_of(keys, self.canary_share)

    def shadow(self, matrix, champion_scores, request_id, protocol, transaction_ids) -> None:
        """Queue the rows to be scored off the response path, with whatever else waits (dropped
        and counted when too much waits)."""
        rows = len(matrix)
        if self._queued + rows > self.max_queued_rows:
            self.stats.dropped_rows += rows
            metrics.CHALLENGER_SHADOW_DROPPED.inc(rows)
            return
        self._queued += rows
        self._matrices.append(matrix)
        self._champion_scores.append(champion_scores)
        self._requests.append(ShadowedRequest(request_id, protocol, transaction_ids, rows))
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._score_waiting())

    async def _score_waiting(self) -> None:
        """Score what gathered in one call, then what came meanwhile, until nothing waits."""
        loop = asyncio.get_running_loop()
        try:
            while self._requests:
                await asyncio.sleep(GATHER_S)
                matrices, champion_scores, requests = (
                    self._matrices, self._champion_scores, self._requests
                )  # fmt: skip
                self._matrices, self._champion_scores, self._requests = [], [], []
                matrix = np.concatenate(matrices)
                try:
                    scores = await loop.run_in_executor(
                        self._shadow_engine, self.model.predict_proba, matrix
                    )
                except Exception as error:  # noqa: BLE001 - counted; answers never depend on it
                    self._failed(error)
                    continue
                finally:
                    self._queued -= len(matrix)
                self._record(requests, np.concatenate(champion_scores), scores)
        finally:
            self._drain = None

    async def probabilities(self, matrix, champion_scores, request_id, protocol, transaction_ids):
        """The challenger's scores, awaited (canary, or a request addressed to it); None when it
        failed: the caller falls back to the champion."""
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(self._engine, self.model.predict_proba, matrix)
        except Exception as error:  # noqa: BLE001 - counted; the champion decides instead
            self._failed(error)
            return None
        request = ShadowedRequest(request_id, protocol, transaction_ids, len(matrix))
        self._record([request], champion_scores, scores)
        return scores

    def _failed(self, error: BaseException | None) -> None:
        self.stats.errors += 1
        logger.error("challenger %s failed: %r", self.model.tag, error)

    def _record(
        self, requests: list[ShadowedRequest], champion_scores: np.ndarray, scores: np.ndarray
    ) -> None:
        """Compare with the champion over the whole call, then hand its scores on at once."""
        decisions = scores >= self.model.threshold
        self.stats.scored_rows += len(scores)
        champion_decisions = champion_scores >= self.champion_threshold
        self.stats.agreeing_rows += int((decisions == champion_decisions).sum())
        self.stats.score_gap_sum += float(np.abs(scores - champion_scores).sum())
        self.on_scored(scores, decisions, requests)

    def shutdown(self) -> None:
        self._engine.shutdown(wait=False)
        self._shadow_engine.shutdown(wait=False)
