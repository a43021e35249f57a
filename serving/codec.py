"""Lean JSON codecs of the scoring path: request bodies straight into feature matrices, and
responses straight into bytes, with msgspec (no per-row pydantic objects, one C pass each way).

The row decoder is exactly as strict as the typed API (`serving.schema.transaction_model`): the
same types, ranges, required and forbidden fields. It reports only that a body failed, so the
caller hands a failed body to the typed API, whose answer names every problem (the rare path
pays for the detail, the common one does not).
"""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec import Meta

from serving.errors import InvalidInput, Violation
from serving.runtime import FeatureSpec
from serving.scorer import Decided

FLOAT32_MAX = float(np.finfo(np.float32).max)
TRANSACTION_ID_MAX_LENGTH = 128
_ENCODER = msgspec.json.Encoder()
_PATH_PART = re.compile(r"\[(\d+)\]|\.(\w+)")


class ColumnsBody(msgspec.Struct, forbid_unknown_fields=True):
    columns: list[str]
    data: list[list[float]]
    transaction_ids: (
        list[Annotated[str, Meta(max_length=TRANSACTION_ID_MAX_LENGTH)] | None] | None
    ) = None


def _feature_type(spec: FeatureSpec) -> Any:
    low = spec.minimum
    high = spec.maximum
    if spec.integral:
        return Annotated[int, Meta(ge=low, le=high)]
    # The model computes in float32: a larger magnitude would become infinite.
    low = -FLOAT32_MAX if low is None else max(low, -FLOAT32_MAX)
    high = FLOAT32_MAX if high is None else min(high, FLOAT32_MAX)
    return Annotated[float, Meta(ge=low, le=high)]


class RowsDecoder:
    """`{"transactions": [{feature: value, ..., "transaction_id": ...}, ...]}` -> matrix, ids."""

    def __init__(self, features: list[FeatureSpec], max_rows: int):
        fields: list[tuple] = [(spec.name, _feature_type(spec)) for spec in features]
        fields.append(
            (
                "transaction_id",
                Annotated[str, Meta(max_length=TRANSACTION_ID_MAX_LENGTH)] | None,
                None,
            )
        )
        # gc=False: rows hold only scalars; untracked, they are cheaper to make and never
        # feed a garbage collection (100-row bodies make 100 of them a request).
        row = msgspec.defstruct("Transaction", fields, forbid_unknown_fields=True, gc=False)
        body = msgspec.defstruct(
            "PredictBody",
            [("transactions", Annotated[list[row], Meta(min_length=1, max_length=max_rows)])],
        )
        self._decoder = msgspec.json.Decoder(body)
        self._values = attrgetter(*[spec.name for spec in features])

    def decode(self, body: bytes) -> tuple[np.ndarray, list[str | None]] | None:
        """The float32 matrix and transaction ids, or None when the body is not valid."""
        try:
            rows = self._decoder.decode(body).transactions
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        values = self._values
        matrix = np.array([values(row) for row in rows], dtype=np.float32)
        return matrix.reshape(len(rows), -1), [row.transaction_id for row in rows]


def _location(path: str) -> list[str | int]:
    """`$.data[3][2]` -> ["data", 3, 2]."""
    return [int(index) if index else name for index, name in _PATH_PART.findall(path)]


class ColumnsDecoder:
    """`{"columns": [names], "data": [[values], ...], "transaction_ids": [...]}` -> matrix, ids.

    Columns may come in any order but must name every model feature once; the values are then
    checked by the model's own validation (`FraudModel.validate`), which names row and field.
    """

    def __init__(self, feature_names: list[str], max_rows: int):
        self._names = feature_names
        self._max_rows = max_rows
        self._decoder = msgspec.json.Decoder(ColumnsBody)

    def decode(self, body: bytes) -> tuple[np.ndarray, list[str | None] | None]:
        try:
            parsed = self._decoder.decode(body)
        except msgspec.ValidationError as error:  # a subclass of DecodeError: first
            message, _, path = str(error).partition(" - at ")
            location = _location(path.strip("`"))
            field = str(location[0]) if location else "body"
            in_rows = field in ("data", "transaction_ids") and len(location) > 1
            raise InvalidInput(
                [Violation(field, location[1] if in_rows else None, message)]
            ) from None
        except msgspec.DecodeError as error:
            raise InvalidInput([Violation("body", None, f"not valid JSON: {error}")]) from None
        return self.arrange(parsed.columns, parsed.data, parsed.transaction_ids)

    def arrange(
        self, columns: list[str], data: list[list[float]], ids: list[str | None] | None
    ) -> tuple[np.ndarray, list[str | None] | None]:
        """The matrix in the model's feature order, or InvalidInput naming what does not fit."""
        missing = [name for name in self._names if name not in columns]
        unknown = [name for name in columns if name not in self._names]
        problems = []
        if missing:
            problems.append(Violation("columns", None, f"missing {', '.join(missing)}"))
        if unknown:
            problems.append(Violation("columns", None, f"unknown {', '.join(unknown)}"))
        if not problems and len(columns) != len(self._names):
            problems.append(Violation("columns", None, "a feature is named twice"))
        if problems:
            raise InvalidInput(problems)
        rows = len(data)
        if not 1 <= rows <= self._max_rows:
            raise InvalidInput(
                [Violation("data", None, f"rows must be 1..{self._max_rows}, got {rows}")]
            )
        width = len(self._names)
        ragged = [i for i, values in enumerate(data) if len(values) != width]
        if ragged:
            raise InvalidInput(
                [Violation("data", i, f"expected {width} values") for i in ragged[:10]]
            )
        if ids is not None and len(ids) != rows:
            raise InvalidInput(
                [Violation("transaction_ids", None, f"expected {rows} ids, got {len(ids)}")]
            )
        matrix = np.array(data, dtype=np.float64)
        order = [columns.index(name) for name in self._names]
        with np.errstate(over="ignore"):  # out of float32's range: refused by validation
            return matrix[:, order].astype(np.float32), ids


def _columns_location(violation: Violation) -> list[str | int]:
    if violation.row is None:
        return [violation.field]
    if violation.field in ColumnsBody.__struct_fields__:
        return [violation.field, violation.row]
    return ["data", violation.row, violation.field]  # a feature's value


def columns_error_body(error: InvalidInput) -> bytes:
    """The 400 body of the columnar form, naming each problem like the row form does:
    `{"error": summary, "detail": [{"loc": [...], "msg": ..., "type": "value_error"}]}`."""
    return _ENCODER.encode(
        {
            "error": str(error),
            "detail": [
                {"loc": _columns_location(v), "msg": v.reason, "type": "value_error"}
                for v in error.violations
            ],
        }
    )


class _Prediction(msgspec.Struct, gc=False):
    """One entry of `serving.schema.PredictResponse.predictions` (cheaper than a dict)."""

    transaction_id: str | None
    fraud_probability: float
    is_fraud: bool
    threshold: float
    model_tag: str
    request_id: str


def encode_predictions(
    request_id: str, transaction_ids: list[str | None] | None, decided: Decided
) -> bytes:
    """The /predict response (`serving.schema.PredictResponse`) as JSON bytes."""
    scores = decided.probabilities.tolist()
    ids = transaction_ids or [None] * len(scores)
    return _ENCODER.encode(
        {
            "request_id": request_id,
            "model_tag": decided.model_tag,
            "predictions": [
                _Prediction(transaction_id, score, decision, threshold, tag, request_id)
                for transaction_id, score, decision, threshold, tag in zip(
                    ids,
                    scores,
                    decided.decisions.tolist(),
                    decided.thresholds.tolist(),
                    decided.tags,
                    strict=True,
                )
            ],
        }
    )


def encode(value: Any) -> bytes:
    return _ENCODER.encode(value)
