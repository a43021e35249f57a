"""Lean JSON codecs of the scoring path: request bodies straight into feature matrices, and
responses straight into bytes, with msgspec (no per-row pydantic objects, one C pass each way).

Both decoders take their rules from the request contract (serving/contract/rules.py). A body the
fast decoder refuses is validated once more by the documented pydantic model, right here, so its 400
names every problem by location (the rare path pays for the detail, the common one does not).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
from pydantic import BaseModel, Field, ValidationError, create_model

from model_store.contract import FeatureSchema
from serving.contract import rules, schema
from serving.contract.refusals import InvalidBody, InvalidInput, Violation
from serving.scoring.scorer import Decided

_ENCODER = msgspec.json.Encoder()
PROTOCOL = "http"  # the label of the requests these codecs carry (/predict, /predict_columns)


def predict_request_model(
    transaction: type[BaseModel],
    max_rows: int,
    name: str = "PredictRequest",
    field: str = "transactions",
) -> type[BaseModel]:
    """A body of rows as pydantic, `{field: [transaction, ...]}` (/predict's by default)."""
    rows = Annotated[list[transaction], Field(**rules.rows_bounds(max_rows))]
    return create_model(name, **{field: (rows, ...)})


def matrix_and_ids(rows: list, values: attrgetter) -> tuple[np.ndarray, list[str | None]]:
    """Decoded rows (rules.transaction_struct) as the float32 matrix and their ids."""
    matrix = np.array([values(row) for row in rows], dtype=np.float32)
    return matrix.reshape(len(rows), -1), [row.transaction_id for row in rows]


class RowsDecoder:
    """`{"transactions": [{feature: value, ..., "transaction_id": ...}, ...]}` -> matrix, ids."""

    def __init__(self, schema: FeatureSchema, max_rows: int):
        transaction = rules.transaction_model(schema)  # its refusals are counted on answer
        row = rules.transaction_struct(schema)
        body = msgspec.defstruct(
            "PredictBody",
            [
                (
                    "transactions",
                    Annotated[list[row], msgspec.Meta(**rules.rows_bounds(max_rows))],
                )
            ],
        )
        self._decoder = msgspec.json.Decoder(body)
        self._documented = predict_request_model(transaction, max_rows)
        self._values = attrgetter(*schema.names)

    def decode(self, body: bytes) -> tuple[np.ndarray, list[str | None]]:
        """The float32 matrix and transaction ids, or InvalidBody naming every problem."""
        try:
            rows = self._decoder.decode(body).transactions
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise explained(self._documented, body, error) from None
        return matrix_and_ids(rows, self._values)


def explained(documented: type[BaseModel], body: bytes, refusal: Exception) -> Exception:
    """The documented model's account of a body the fast decoder refused."""
    try:
        documented.model_validate_json(body)
    except ValidationError as error:
        return InvalidBody(error)
    # The two forms agree by test (tests/code/test_contract.py); if they ever did not, the
    # fast decoder's own reason still names the problem.
    return InvalidInput([Violation("body", None, str(refusal))])


class ColumnsDecoder:
    """`{"columns": [names], "data": [[values], ...], "transaction_ids": [...]}` -> matrix, ids.

    Columns may come in any order but must name every model feature once; the values are then
    checked by the contract's matrix check (serving/contract/rules.py), which names row and
    field.
    """

    def __init__(self, feature_names: list[str], max_rows: int):
        self._names = feature_names
        self._max_rows = max_rows
        self._decoder = msgspec.json.Decoder(rules.ColumnsBody)

    def parse(self, body: bytes) -> rules.ColumnsBody:
        """The body's parts, or InvalidBody naming every problem of its shape and types."""
        try:
            return self._decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise explained(rules.ColumnsRequest, body, error) from None

    def arrange(
        self, columns: list[str], data: list[list[float]], ids: list[str | None] | None
    ) -> tuple[np.ndarray, list[str | None] | None]:
        """The matrix in the model's feature order, or InvalidInput naming every part that does
        not fit (the values themselves are checked once the matrix is whole)."""
        missing = [name for name in self._names if name not in columns]
        unknown = [name for name in columns if name not in self._names]
        problems = []
        if missing:
            problems.append(Violation("columns", None, f"missing {', '.join(missing)}"))
        if unknown:
            problems.append(Violation("columns", None, f"unknown {', '.join(unknown)}"))
        if not problems and len(columns) != len(self._names):
            problems.append(Violation("columns", None, "a feature is named twice"))
        rows = len(data)
        if not 1 <= rows <= self._max_rows:
            problems.append(
                Violation("data", None, f"rows must be 1..{self._max_rows}, got {rows}")
            )
        width = len(columns)
        problems += [
            Violation("data", i, f"expected {width} values, one per column", ("data", i))
            for i, values in enumerate(data)
            if len(values) != width
        ]
        if ids is not None and len(ids) != rows:
            problems.append(
                Violation("transaction_ids", None, f"expected {rows} ids, got {len(ids)}")
            )
        if problems:
            raise InvalidInput(problems)
        with np.errstate(over="ignore"):  # out of float32's range: inf, refused by the check
            matrix = np.array(data, dtype=np.float32)
        if columns != self._names:
            matrix = matrix[:, [columns.index(name) for name in self._names]]
        return matrix, ids


def in_columns(error: InvalidInput) -> InvalidInput:
    """A matrix check's problems located in the columnar body: `["data", row, feature]`."""
    return InvalidInput(
        [
            (
                v
                if v.row is None or v.location
                else Violation(v.field, v.row, v.reason, ("data", v.row, v.field))
            )
            for v in error.violations
        ]
    )


def _struct_of(model: type[BaseModel], name: str, leave_out: tuple[str, ...] = ()) -> type:
    """A msgspec struct of a documented response model's fields, in its order (the answer is
    encoded as the API document describes it: one spec, `serving/contract/schema.py`)."""
    fields = [(key, f.annotation) for key, f in model.model_fields.items() if key not in leave_out]
    return msgspec.defstruct(name, fields, gc=False)


# One entry of PredictResponse.predictions, without its features (/predict) and with them
# (/score with include_features): a struct is cheaper to encode than a dict.
_Prediction = _struct_of(schema.Prediction, "Prediction", leave_out=("features",))
_PredictionWithFeatures = _struct_of(schema.Prediction, "PredictionWithFeatures")


def encode_predictions(
    request_id: str,
    transaction_ids: list[str | None] | None,
    decided: Decided,
    features: list[dict[str, float | int]] | None = None,
) -> bytes:
    """The /predict response (`serving.contract.schema.PredictResponse`) as JSON bytes; with
    `features`, each prediction also carries its row's features."""
    scores = decided.probabilities.tolist()
    ids = transaction_ids or [None] * len(scores)
    columns = [
        ids,
        scores,
        decided.decisions.tolist(),
        decided.thresholds.tolist(),
        decided.tags,
    ]
    if features is None:
        entries = [
            _Prediction(transaction_id, score, decision, threshold, tag, request_id)
            for transaction_id, score, decision, threshold, tag in zip(*columns, strict=True)
        ]
    else:
        entries = [
            _PredictionWithFeatures(*entry[:5], request_id, entry[5])
            for entry in zip(*columns, features, strict=True)
        ]
    return _ENCODER.encode(
        {"request_id": request_id, "model_tag": decided.model_tag, "predictions": entries}
    )


def encode(value: Any) -> bytes:
    return _ENCODER.encode(value)
