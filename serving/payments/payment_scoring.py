"""/score: raw payments in, decisions out. A payment (in the training table's own columns, as
the model's `[columns]` mapping named them) enters the online state, its features are computed
from that state with training's definition (model_store/payments.py), and the matrix goes
through the same scorer as /predict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
from pydantic import BaseModel

from model_store.contract import FeatureSchema
from model_store.payments import WindowAggregates, features_from
from serving.contract.refusals import Conflict, InvalidInput, Unavailable
from serving.payments.embedded_state import EmbeddedState
from serving.payments.payment_requests import (
    PROTOCOL,
    PaymentBatch,
    PaymentsDecoder,
    time_violation,
)
from serving.payments.payment_state import Payment, PaymentStore
from serving.payments.redis_state import RedisState
from serving.protocols import codec
from serving.scoring.scorer import Scorer
from settings import ColumnsConfig, Settings

NOT_A_PAYMENT_MODEL = (
    "this model does not score raw payments: it was trained without payment features "
    "(columns.payment_features = false) or before /score existed; send its features to /predict"
)
STORE_OFF = "scoring raw payments is turned off here (payments.store = 'off'); use /predict"


def open_store(settings: Settings, delay_days: int) -> PaymentStore:
    """The state store the settings choose (payments.store, not 'off')."""
    if settings.payments.store == "redis":
        config = settings.payments
        return RedisState(config.redis_url, config.redis_prefix, delay_days, config.redis_timeout_s)
    return EmbeddedState(settings.payment_state_path(), delay_days)


class PaymentScoring:
    """The /score endpoints' work for one worker: decode, check, enter the state, score."""

    def __init__(
        self,
        columns: ColumnsConfig | None,
        schema: FeatureSchema,
        state: PaymentStore | str | None,
        scorer: Scorer,
        max_clock_skew_s: float,
        max_rows: int,
        clock: Callable[[], float],
    ):
        self.columns = columns  # the model's (payment_columns); None: it takes no payments
        self.schema = schema
        self.decoder = PaymentsDecoder(columns, schema, max_rows) if columns is not None else None
        self.state = state  # None: /score does not apply (the columns say why); text: broken
        self.scorer = scorer
        self.max_clock_skew_ns = int(max_clock_skew_s * 1e9)
        self.clock = clock

    @property
    def status(self) -> str:
        """For /health: 'available'; 'degraded' (its last call failed); 'unavailable' (it could
        not be opened); 'off'."""
        if self.state is None:
            return "off"
        if isinstance(self.state, str):
            return "unavailable"
        return "available" if self.state.healthy else "degraded"

    @property
    def store(self) -> PaymentStore | None:
        """The state store, when there is one to use."""
        return None if isinstance(self.state, str) else self.state

    def check_applies(self) -> None:
        if self.state is None:
            raise Conflict(NOT_A_PAYMENT_MODEL if self.columns is None else STORE_OFF)
        if isinstance(self.state, str):
            raise Unavailable(self.state)

    async def rows_body(self, body: bytes, request_id: str, durable: bool) -> bytes:
        """The lean path's /score: a row-form body."""
        self.check_applies()
        batch, with_features = self.decoder.rows(body)
        return await self.decide_batch(batch, request_id, durable, with_features)

    async def columns_body(self, body: bytes, request_id: str, durable: bool) -> bytes:
        """The lean path's /score_columns: a columnar body."""
        self.check_applies()
        columns, data, with_features = self.decoder.columns_body(body)
        return await self.decide_columns(columns, data, request_id, durable, with_features)

    async def decide_rows(
        self, rows: list[BaseModel], request_id: str, durable: bool, with_features: bool
    ) -> bytes:
        """BentoML's typed /score: rows its types already validated."""
        self.check_applies()
        return await self.decide_batch(self.decoder.typed(rows), request_id, durable, with_features)

    async def decide_columns(
        self,
        columns: list[str],
        data: list[list[Any]],
        request_id: str,
        durable: bool,
        with_features: bool,
    ) -> bytes:
        self.check_applies()
        batch = self.decoder.columns(columns, data)
        return await self.decide_batch(batch, request_id, durable, with_features)

    def _check_clock(self, payments: list[Payment]) -> None:
        latest = int(self.clock() * 1e9) + self.max_clock_skew_ns
        ahead = [
            time_violation(
                self.columns.timestamp,
                position,
                "is ahead of the server's clock by more than payments.max_clock_skew_s",
            )
            for position, payment in enumerate(payments)
            if payment.time_ns > latest
        ]
        if ahead:
            raise InvalidInput(ahead)

    def _record(self, payments: list[Payment]) -> WindowAggregates:
        """Against the state (one call each): refuse what is older than its horizon, then enter
        the payments and read their windows."""
        oldest = self.state.oldest_accepted_ns()
        too_old = [
            time_violation(
                self.columns.timestamp,
                position,
                "is older than the online state's horizon (the longest window plus the label "
                "delay before the latest payment): score it with /predict",
            )
            for position, payment in enumerate(payments)
            if oldest is not None and payment.time_ns < oldest
        ]
        if too_old:
            raise InvalidInput(too_old)
        return self.state.score_and_record(payments)

    async def decide_batch(
        self, batch: PaymentBatch, request_id: str, durable: bool, with_features: bool
    ) -> bytes:
        payments = batch.payments
        self._check_clock(payments)
        if self.state.local:
            aggregates = self._record(payments)
        else:
            aggregates = await anyio.to_thread.run_sync(self._record, payments)
        features = features_from(aggregates)
        for position, name in enumerate(self.columns.extra_features):
            features[name] = batch.extras[:, position]
        names = self.schema.names
        matrix = np.column_stack([features[name] for name in names]).astype(np.float32)
        ids = [payment.transaction_id for payment in payments]
        decided = await self.scorer.decide(matrix, PROTOCOL, request_id, ids, False, durable)
        if not with_features:
            return codec.encode_predictions(request_id, ids, decided)
        integral = [feature.integral for feature in self.schema]
        rows = [
            {
                name: int(value) if whole else value
                for name, value, whole in zip(names, values, integral, strict=True)
            }
            for values in matrix.tolist()
        ]
        return codec.encode_predictions(request_id, ids, decided, rows)
