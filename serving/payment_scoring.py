"""/score: raw payments in, decisions out. A payment (in the training table's own columns, as
the model's `[columns]` mapping named them) enters the online state, its features are computed
from that state with training's definition (model_store/payments.py), and the matrix goes
through the same scorer as /predict."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)

from model_store.contract import FLOAT32_MAX, FeatureSchema
from model_store.payments import WindowAggregates, features_from
from model_store.store import StoredModel
from serving import api_document, codec, contract, traffic
from serving.errors import Conflict, InvalidInput, Unavailable, Violation
from serving.payment_state import EmbeddedState, Payment, PaymentStore
from serving.payment_state_redis import RedisState
from serving.scorer import Scorer
from settings import ColumnsConfig, Settings

PROTOCOL = "score"


def _integer_as_text(value: Any) -> Any:
    """Tables often number their ids: 42 and "42" name the same key."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


PaymentValue = str | int | float | bool | None  # a JSON scalar: the row form decides
Key = Annotated[
    str,
    BeforeValidator(_integer_as_text),
    Field(min_length=1, max_length=contract.TRANSACTION_ID_MAX_LENGTH),
]


NOT_A_PAYMENT_MODEL = (
    "this model does not score raw payments: it was trained without payment features "
    "(columns.payment_features = false) or before /score existed; send its features to /predict"
)
STORE_OFF = "scoring raw payments is turned off here (payments.store = 'off'); use /predict"


def payment_columns(stored: StoredModel) -> ColumnsConfig | None:
    """The column mapping the model was trained with, when it scores payments."""
    columns = stored.metadata.get("columns")
    if columns is None:
        return None
    mapping = ColumnsConfig(**columns)
    return mapping if mapping.payment_features else None


def payment_model(
    columns: ColumnsConfig, schema: FeatureSchema, on_invalid: Callable[[set[str]], None]
) -> type[BaseModel]:
    """One payment as pydantic, in the table's own column names: id, time (ISO 8601, or Unix
    seconds; without an offset it is read as UTC, like the training table), customer, terminal,
    a finite amount >= 0, and the model's extra features with their own rules."""
    extras = contract.transaction_model(
        FeatureSchema(tuple(f for f in schema if f.name in columns.extra_features)), on_invalid
    )
    fields: dict[str, Any] = {
        columns.transaction_id: (Key, Field(description="The payment's unique id.")),
        columns.timestamp: (datetime, Field(description="When it happened (ISO 8601).")),
        columns.customer_id: (Key, Field(description="The customer (card).")),
        columns.terminal_id: (Key, Field(description="The terminal (merchant).")),
        columns.amount: (
            float,
            Field(ge=0, le=FLOAT32_MAX, allow_inf_nan=False, strict=True, description="Amount."),
        ),
    }
    for name in columns.extra_features:
        fields[name] = extras.model_fields[name].annotation, extras.model_fields[name]
    return create_model("Payment", __config__=ConfigDict(extra="forbid"), **fields)


def open_store(settings: Settings, delay_days: int) -> PaymentStore:
    """The state store the settings choose (payments.store, not 'off')."""
    if settings.payments.store == "redis":
        config = settings.payments
        return RedisState(config.redis_url, config.redis_prefix, delay_days, config.redis_timeout_s)
    return EmbeddedState(settings.payment_state_path(), delay_days)


def example_payment(columns: ColumnsConfig, schema: FeatureSchema) -> dict:
    """A valid payment in the model's columns (extra features at their smallest value)."""
    payment = {
        columns.transaction_id: "pay-1",
        columns.timestamp: "2026-07-01T12:30:00Z",
        columns.customer_id: "card-1",
        columns.terminal_id: "terminal-1",
        columns.amount: 42.5,
    }
    features = api_document.example_row(schema)
    return payment | {name: features[name] for name in columns.extra_features}


class PaymentScoring:
    """The /score endpoint's work for one worker."""

    def __init__(
        self,
        columns: ColumnsConfig | None,
        schema: FeatureSchema,
        row_model: type[BaseModel] | type[dict],
        state: PaymentStore | str | None,
        scorer: Scorer,
        max_clock_skew_s: float,
        clock: Callable[[], float],
    ):
        self.columns = columns  # the model's (payment_columns); None: it takes no payments
        self.schema = schema
        self.rows = TypeAdapter(list[row_model])  # the columnar form, held to the row form
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

    def payments(self, rows: list[BaseModel]) -> list[Payment]:
        """The typed rows as payments, after the checks that need the clock."""
        columns = self.columns
        payments = [
            Payment(
                transaction_id=getattr(row, columns.transaction_id),
                time_ns=_nanoseconds(getattr(row, columns.timestamp)),
                customer=getattr(row, columns.customer_id),
                terminal=getattr(row, columns.terminal_id),
                amount=float(getattr(row, columns.amount)),
            )
            for row in rows
        ]
        latest = int(self.clock() * 1e9) + self.max_clock_skew_ns
        ahead = [
            _time_violation(
                columns.timestamp,
                position,
                "is ahead of the server's clock by more than payments.max_clock_skew_s",
            )
            for position, payment in enumerate(payments)
            if payment.time_ns > latest
        ]
        if ahead:
            raise InvalidInput(ahead)
        return payments

    def _record(self, payments: list[Payment]) -> WindowAggregates:
        """Against the state (one call each, off the event loop): refuse what is older than its
        horizon, then enter the payments and read their windows."""
        oldest = self.state.oldest_accepted_ns()
        too_old = [
            _time_violation(
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

    async def score_columns(
        self,
        columns: list[str],
        data: list[list[Any]],
        request_id: str,
        durable: bool,
        with_features: bool,
    ) -> bytes:
        """The columnar form: each payment made a row and held to the row form's rules, every
        problem located in the columnar body."""
        self.check_applies()
        problems = [
            Violation("columns", None, f"'{name}' is named twice", location=("columns",))
            for name in sorted({name for name in columns if columns.count(name) > 1})
        ]
        problems += [
            Violation(
                "data", row, f"has {len(values)} values for {len(columns)} columns", ("data", row)
            )
            for row, values in enumerate(data)
            if len(values) != len(columns)
        ]
        if not problems:
            try:
                rows = self.rows.validate_python(
                    [dict(zip(columns, values, strict=True)) for values in data]
                )
            except ValidationError as error:
                problems = list(dict.fromkeys(_in_columns(d) for d in error.errors()))
        if problems:
            traffic.record_rejection(PROTOCOL, {v.field for v in problems})
            raise InvalidInput(problems)
        return await self.score(rows, request_id, durable, with_features)

    async def score(
        self, rows: list[BaseModel], request_id: str, durable: bool, with_features: bool
    ) -> bytes:
        self.check_applies()
        try:
            payments = self.payments(rows)
            aggregates = await anyio.to_thread.run_sync(self._record, payments)
        except InvalidInput as error:
            traffic.record_rejection(PROTOCOL, {v.field for v in error.violations})
            raise
        features = features_from(aggregates)
        for name in self.columns.extra_features:
            features[name] = np.array([getattr(row, name) for row in rows], dtype=float)
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


def _in_columns(detail: dict) -> Violation:
    """A row-form problem located in the columnar body: the column when it is not one of the
    form's (or is missing), else the payment's value."""
    row, field = detail["loc"][0], str(detail["loc"][1]) if len(detail["loc"]) > 1 else "row"
    if detail["type"] in ("extra_forbidden", "missing"):
        what = "is not a payment field" if detail["type"] == "extra_forbidden" else "is missing"
        return Violation(field, None, f"column '{field}' {what}", location=("columns",))
    return Violation(field, row, detail["msg"], location=("data", row, field))


def _time_violation(column: str, position: int, reason: str) -> Violation:
    """A payment's time refused, located in the body as the typed model locates its errors."""
    return Violation(column, position, reason, location=("payments", position, column))


def _nanoseconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
