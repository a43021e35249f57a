"""The request contract: each rule of a valid scoring request, written once, and the request
types every wire format is derived from.

A feature's rule (integer or real, its range within float32's: `Feature.bounds`) becomes the
pydantic field that documents the API and validates BentoML's typed endpoints, the msgspec field
of the lean decoders, and the numpy check of a matrix that arrives as tensors (OIP, columns).
A property test holds the pydantic and msgspec forms to the same answers (tests/code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from model_store.contract import Feature, FeatureSchema
from serving.contract.refusals import InvalidInput, Violation, failed_fields

TRANSACTION_ID_MAX_LENGTH = 128
TRANSACTION_ID = "transaction_id"
TRANSACTION_ID_DESCRIPTION = "Your id for the transaction, echoed back."


def _limits(feature: Feature) -> dict[str, float]:
    """ge/le of a feature's field (an unbounded side of an integer feature has none)."""
    low, high = feature.bounds
    return {
        key: value for key, value in (("ge", low), ("le", high)) if value not in (-np.inf, np.inf)
    }


def _kind(feature: Feature) -> type:
    return int if feature.integral else float


def transaction_model(
    schema: FeatureSchema, on_invalid: Callable[[set[str]], None] | None = None
) -> type[BaseModel]:
    """One transaction as pydantic: every model feature, typed and range-checked, and an
    optional id. Strict: a string, a boolean or a NaN/inf never passes for a number; unknown and
    missing fields are errors. `on_invalid` receives the failing field names: for BentoML's typed
    endpoints, which answer a refused body themselves (serving/http/answers.py counts the rest)."""
    fields: dict[str, Any] = {
        TRANSACTION_ID: (
            str | None,
            Field(
                None, max_length=TRANSACTION_ID_MAX_LENGTH, description=TRANSACTION_ID_DESCRIPTION
            ),
        )
    }
    for feature in schema:
        fields[feature.name] = (documented_type(feature), ...)

    return create_model(
        "Transaction",
        __config__=ConfigDict(extra="forbid"),
        __validators__=counting(on_invalid) if on_invalid is not None else None,
        **fields,
    )


def counting(on_invalid: Callable[[set[str]], None]) -> dict[str, Any]:
    """A row model's validator that hands the fields of each refusal to `on_invalid`."""

    def count_failures(cls: type[BaseModel], data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as error:
            on_invalid(failed_fields(error))
            raise

    return {"count_failures": model_validator(mode="wrap")(count_failures)}


def documented_type(feature: Feature) -> Any:
    """A feature's pydantic type: its kind within its range, strict (a string, a boolean or a
    NaN/inf never passes for a number)."""
    constraints: dict[str, Any] = {"strict": True, "description": feature.description}
    if not feature.integral:
        constraints["allow_inf_nan"] = False
    return Annotated[_kind(feature), Field(**constraints, **_limits(feature))]


def struct_type(feature: Feature) -> Any:
    """A feature's msgspec type: its kind within its range."""
    return Annotated[_kind(feature), msgspec.Meta(**_limits(feature))]


def transaction_struct(schema: FeatureSchema) -> type[msgspec.Struct]:
    """The same transaction as a msgspec struct, for the lean decoder (msgspec never takes a
    string or a boolean for a number, nor NaN; unknown fields are refused)."""
    fields: list[tuple] = [(feature.name, struct_type(feature)) for feature in schema]
    transaction_id = Annotated[str, msgspec.Meta(max_length=TRANSACTION_ID_MAX_LENGTH)]
    fields.append((TRANSACTION_ID, transaction_id | None, None))
    # gc=False: rows hold only scalars; untracked, they are cheaper to make and never feed a
    # garbage collection (100-row bodies make 100 of them a request).
    return msgspec.defstruct("Transaction", fields, forbid_unknown_fields=True, gc=False)


def example_row(schema: FeatureSchema) -> dict:
    """A valid transaction: each feature at its smallest accepted value, or 1 when unbounded."""
    row: dict = {"transaction_id": "tx-1"}
    for feature in schema:
        value = feature.minimum if feature.minimum is not None else 1
        row[feature.name] = int(value) if feature.integral else float(value)
    return row


def rows_bounds(max_rows: int) -> dict[str, int]:
    """How many rows one request may carry."""
    return {"min_length": 1, "max_length": max_rows}


ColumnsValue = Annotated[float, Field(strict=True, allow_inf_nan=False)]
ColumnsIds = list[Annotated[str, Field(max_length=TRANSACTION_ID_MAX_LENGTH)] | None] | None


class ColumnsRequest(BaseModel):
    """The columnar form: `columns` names every model feature once (any order), `data` holds
    one list of values per transaction in that order, `transaction_ids` optionally one id each."""

    model_config = ConfigDict(extra="forbid")

    columns: list[str]
    data: list[list[ColumnsValue]]
    transaction_ids: ColumnsIds = None


class ColumnsBody(msgspec.Struct, forbid_unknown_fields=True):
    """The same columnar body for the lean decoder."""

    columns: list[str]
    data: list[list[float]]
    transaction_ids: (
        list[Annotated[str, msgspec.Meta(max_length=TRANSACTION_ID_MAX_LENGTH)] | None] | None
    ) = None


class MatrixCheck:
    """The rules of a feature matrix that arrives as numbers (columns, OIP tensors): shape, row
    count, finiteness, integrality and ranges, each problem named by row and feature."""

    def __init__(self, schema: FeatureSchema, max_rows: int):
        self.names = schema.names
        self.max_rows = max_rows
        bounds = np.array([feature.bounds for feature in schema], dtype=np.float64)
        self.low, self.high = bounds[:, 0], bounds[:, 1]
        self.integral = np.array([feature.integral for feature in schema])

    def __call__(self, matrix: np.ndarray) -> None:
        width = len(self.names)
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise InvalidInput(
                [Violation("shape", None, f"expected [N, {width}], got {list(matrix.shape)}")]
            )
        if not 1 <= matrix.shape[0] <= self.max_rows:
            raise InvalidInput(
                [
                    Violation(
                        "shape", None, f"rows must be 1..{self.max_rows}, got {matrix.shape[0]}"
                    )
                ]
            )
        low, high = self.low, self.high
        finite = np.isfinite(matrix)
        checks = [
            (~finite, lambda column: "must be a finite number"),
            (
                finite & self.integral & (matrix != np.round(matrix)),
                lambda column: "must be an integer",
            ),
            (finite & (matrix < low), lambda column: f"must be >= {low[column]}"),
            (finite & (matrix > high), lambda column: f"must be <= {high[column]}"),
        ]
        if not any(bad.any() for bad, _ in checks):
            return
        violations = [
            Violation(self.names[column], int(row), reason(column))
            for bad, reason in checks
            for row, column in np.argwhere(bad)
        ]
        raise InvalidInput(sorted(violations, key=lambda v: (v.row, v.field)))
