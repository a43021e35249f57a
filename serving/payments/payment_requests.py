"""/score's request types, in the training table's own columns as the model's `[columns]`
mapping named them: the documented pydantic row model and the lean msgspec struct of the same
payment (PaymentsDecoder), and an example payment for the API document."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any

import msgspec
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

from model_store.contract import Feature, FeatureSchema
from model_store.store import StoredModel
from serving.contract import rules
from serving.contract.refusals import InvalidBody, InvalidInput, Violation
from serving.payments.payment_state import Payment
from settings import ColumnsConfig

PROTOCOL = "score"
EPOCH, NAIVE_EPOCH = datetime(1970, 1, 1, tzinfo=UTC), datetime(1970, 1, 1)
MICROSECOND = timedelta(microseconds=1)


def _integer_as_text(value: Any) -> Any:
    """Tables often number their ids: 42 and "42" name the same key."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


PaymentValue = str | int | float | bool | None  # a JSON scalar: the row form decides
KEY_LENGTH = {"min_length": 1, "max_length": rules.TRANSACTION_ID_MAX_LENGTH}
Key = Annotated[str, BeforeValidator(_integer_as_text), Field(**KEY_LENGTH)]
LeanKey = Annotated[str, msgspec.Meta(**KEY_LENGTH)] | int
AMOUNT = Feature("amount", "float64", 0.0, None, "Amount.")  # finite, >= 0, within float32


@dataclass(frozen=True)
class PaymentField:
    """One of a payment's own fields: its name in the lean decoder, the `ColumnsConfig` setting
    that names its column (the body's name for it), its pydantic and msgspec types, and an
    example value (the API document's)."""

    name: str
    column: str
    description: str
    documented: Any
    lean: Any
    example: Any


# A payment's own fields, written once: the documented model (payment_model), the lean struct
# (payment_struct) and the example payment are all built from this table.
PAYMENT = (
    PaymentField(
        "transaction_id", "transaction_id", "The payment's unique id.", Key, LeanKey, "pay-1"
    ),
    PaymentField(
        "time",
        "timestamp",
        "When it happened (ISO 8601).",
        datetime,
        datetime,
        "2026-07-01T12:30:00Z",
    ),
    PaymentField("customer", "customer_id", "The customer (card).", Key, LeanKey, "card-1"),
    PaymentField("terminal", "terminal_id", "The terminal (merchant).", Key, LeanKey, "terminal-1"),
    PaymentField(
        "amount",
        "amount",
        AMOUNT.description,
        rules.documented_type(AMOUNT),
        rules.struct_type(AMOUNT),
        42.5,
    ),
)


def payment_wire_names(columns: ColumnsConfig) -> tuple[str, ...]:
    """The body's names of a payment's own fields: the table's columns."""
    return tuple(getattr(columns, field.column) for field in PAYMENT)


def payment_columns(stored: StoredModel) -> ColumnsConfig | None:
    """The column mapping the model was trained with, when it scores payments."""
    columns = stored.metadata.get("columns")
    if columns is None:
        return None
    mapping = ColumnsConfig(**columns)
    return mapping if mapping.payment_features else None


def payment_model(
    columns: ColumnsConfig,
    schema: FeatureSchema,
    on_invalid: Callable[[set[str]], None] | None = None,
) -> type[BaseModel]:
    """One payment as pydantic, in the table's own column names: id, time (ISO 8601, or Unix
    seconds; without an offset it is read as UTC, like the training table), customer, terminal,
    a finite amount >= 0, and the model's extra features with their own rules. `on_invalid`: as
    `rules.transaction_model`'s."""
    features = {feature.name: feature for feature in schema}
    fields: dict[str, Any] = {
        getattr(columns, field.column): (field.documented, Field(description=field.description))
        for field in PAYMENT
    }
    for name in columns.extra_features:
        fields[name] = (rules.documented_type(features[name]), ...)
    return create_model(
        "Payment",
        __config__=ConfigDict(extra="forbid"),
        __validators__=rules.counting(on_invalid) if on_invalid is not None else None,
        **fields,
    )


def payment_struct(columns: ColumnsConfig, schema: FeatureSchema) -> type[msgspec.Struct]:
    """The same payment as a msgspec struct, for the lean decoder. It reads the common forms
    (ids as text or integers, times as RFC 3339 text); a body it refuses goes to the documented
    model, which scores what only it reads (a time as Unix seconds) and names every problem."""
    features = {feature.name: feature for feature in schema}
    extras = [f"extra_{i}" for i in range(len(columns.extra_features))]
    fields: list[tuple] = [
        *((field.name, field.lean) for field in PAYMENT),
        *(
            (field, rules.struct_type(features[name]))
            for field, name in zip(extras, columns.extra_features, strict=True)
        ),
    ]
    rename = dict(zip((field.name for field in PAYMENT), payment_wire_names(columns), strict=True))
    rename |= dict(zip(extras, columns.extra_features, strict=True))
    return msgspec.defstruct("Payment", fields, rename=rename, forbid_unknown_fields=True, gc=False)


class PaymentBatch(msgspec.Struct, gc=False):
    """Decoded payments: what the state needs of each, and the extra features' values."""

    payments: list[Payment]
    extras: np.ndarray  # [payments, extra features], float64


def _batch(rows: list, fields: attrgetter, extras: attrgetter | None) -> PaymentBatch:
    payments = []
    for row in rows:
        transaction_id, moment, customer, terminal, amount = fields(row)
        payments.append(
            Payment(str(transaction_id), _nanoseconds(moment), str(customer), str(terminal), amount)
        )
    values = [extras(row) for row in rows] if extras is not None else []
    return PaymentBatch(payments, np.array(values, dtype=float).reshape(len(rows), -1))


def _read(lean: msgspec.json.Decoder, documented: type[BaseModel], body: bytes) -> tuple:
    """The body as the lean decoder reads it or, where it refuses, as the documented model does
    (which reads what only it reads, or names every problem); and whether the lean one read it."""
    try:
        return lean.decode(body), True
    except (msgspec.ValidationError, msgspec.DecodeError):
        try:
            return documented.model_validate_json(body), False
        except ValidationError as error:
            raise InvalidBody(error) from None


class PaymentsDecoder:
    """/score's bodies into payments: the row form with msgspec (falling back on the documented
    model, see `payment_struct`), the columnar form held to the row form's rules."""

    def __init__(self, columns: ColumnsConfig, schema: FeatureSchema, max_rows: int):
        bounds = rules.rows_bounds(max_rows)
        row_model = payment_model(columns, schema)
        self._rows_body = msgspec.json.Decoder(
            msgspec.defstruct(
                "ScoreBody",
                [
                    (
                        "payments",
                        Annotated[list[payment_struct(columns, schema)], msgspec.Meta(**bounds)],
                    ),
                    ("include_features", bool, False),
                ],
            )
        )
        self.documented_rows = create_model(
            "ScoreRequest",
            payments=(Annotated[list[row_model], Field(**bounds)], ...),
            include_features=(bool, False),
        )
        self._columns_body = msgspec.json.Decoder(
            msgspec.defstruct(
                "ScoreColumnsBody",
                [
                    ("columns", list[str]),
                    ("data", Annotated[list[list[PaymentValue]], msgspec.Meta(**bounds)]),
                    ("include_features", bool, False),
                ],
            )
        )
        self._documented_columns = create_model(
            "ScoreColumnsRequest",
            columns=(list[str], ...),
            data=(Annotated[list[list[PaymentValue]], Field(**bounds)], ...),
            include_features=(bool, False),
        )
        self._typed_rows = TypeAdapter(list[row_model])
        self._typed_fields = attrgetter(*payment_wire_names(columns))
        self._typed_extras = attrgetter(*columns.extra_features) if columns.extra_features else None
        extras = [f"extra_{i}" for i in range(len(columns.extra_features))]
        self._lean_fields = attrgetter(*(field.name for field in PAYMENT))
        self._lean_extras = attrgetter(*extras) if extras else None

    def typed(self, rows: list[BaseModel]) -> PaymentBatch:
        """Rows of the documented model (BentoML's typed endpoint, or the fallback)."""
        return _batch(rows, self._typed_fields, self._typed_extras)

    def rows(self, body: bytes) -> tuple[PaymentBatch, bool]:
        """A row-form body: its payments and whether the answer carries their features."""
        parsed, lean = _read(self._rows_body, self.documented_rows, body)
        if lean:
            return (
                _batch(parsed.payments, self._lean_fields, self._lean_extras),
                parsed.include_features,
            )
        return self.typed(parsed.payments), parsed.include_features

    def columns_body(self, body: bytes) -> tuple[list[str], list[list[Any]], bool]:
        parsed, _ = _read(self._columns_body, self._documented_columns, body)
        return parsed.columns, parsed.data, parsed.include_features

    def columns(self, columns: list[str], data: list[list[Any]]) -> PaymentBatch:
        """The columnar form: each payment made a row and held to the row form's rules, every
        problem located in the columnar body."""
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
        if problems:
            raise InvalidInput(problems)
        try:
            rows = self._typed_rows.validate_python(
                [dict(zip(columns, values, strict=True)) for values in data]
            )
        except ValidationError as error:
            raise InvalidInput(
                list(dict.fromkeys(_in_columns(d) for d in error.errors()))
            ) from None
        return self.typed(rows)


def example_payment(columns: ColumnsConfig, schema: FeatureSchema) -> dict:
    """A valid payment in the model's columns (extra features at their smallest value)."""
    payment = dict(zip(payment_wire_names(columns), (f.example for f in PAYMENT), strict=True))
    features = rules.example_row(schema)
    return payment | {name: features[name] for name in columns.extra_features}


def _in_columns(detail: dict) -> Violation:
    """A row-form problem located in the columnar body: the column when it is not one of the
    form's (or is missing), else the payment's value."""
    row, field = detail["loc"][0], str(detail["loc"][1]) if len(detail["loc"]) > 1 else "row"
    if detail["type"] in ("extra_forbidden", "missing"):
        what = "is not a payment field" if detail["type"] == "extra_forbidden" else "is missing"
        return Violation(field, None, f"column '{field}' {what}", location=("columns",))
    return Violation(field, row, detail["msg"], location=("data", row, field))


def time_violation(column: str, position: int, reason: str) -> Violation:
    """A payment's time refused, located in the body as the typed model locates its errors."""
    return Violation(column, position, reason, location=("payments", position, column))


def _nanoseconds(moment: datetime) -> int:
    """Since the epoch; a time without an offset is UTC, like the training table's."""
    delta = moment - (EPOCH if moment.tzinfo is not None else NAIVE_EPOCH)
    return (delta // MICROSECOND) * 1_000
