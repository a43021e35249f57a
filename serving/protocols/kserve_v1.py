"""KServe's V1 protocol, the default of KServe's Python SDK: `POST /v1/models/<name>:predict`
with `{"instances": [...]}`, answered `{"predictions": [...]}`; `GET /v1/models/<name>` says
whether the model is ready.

An instance is either a list of the model's features in its order (as tensors are sent) or an
object of features by name with an optional `transaction_id` (as /predict's rows are). Both are
held to the request contract (serving/contract/rules.py): lists by the matrix check, objects
by the same msgspec struct and, for a full 400, the same documented pydantic model as /predict.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np

from model_store.contract import FeatureSchema
from serving.contract import rules
from serving.contract.refusals import InvalidInput, NotFound, Violation
from serving.protocols import codec
from serving.scoring.scorer import Decided

PROTOCOL = "kserve_v1"  # the label its requests are counted under


def check_model(expected: str, name: str) -> None:
    if name != expected:
        raise NotFound(f"unknown model '{name}': this server serves '{expected}'")


class V1Decoder:
    """`{"instances": [...]}` -> (matrix, transaction ids)."""

    def __init__(self, schema: FeatureSchema, max_rows: int):
        transaction = rules.transaction_model(schema)  # its refusals are counted on answer
        bounds = rules.rows_bounds(max_rows)
        self._envelope = msgspec.json.Decoder(
            msgspec.defstruct(
                "V1Request",
                [("instances", Annotated[list[Any], msgspec.Meta(**bounds)])],
                forbid_unknown_fields=True,
            )
        )
        self._objects = list[rules.transaction_struct(schema)]
        self._documented = codec.predict_request_model(
            transaction, max_rows, "V1Request", "instances"
        )
        self._names = schema.names
        self._values = attrgetter(*schema.names)

    def decode(self, body: bytes) -> tuple[np.ndarray, list[str | None] | None]:
        try:
            instances = self._envelope.decode(body).instances
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise InvalidInput([Violation("instances", None, str(error))]) from None
        if all(isinstance(instance, list) for instance in instances):
            return self._lists(instances), None
        try:
            rows = msgspec.convert(instances, self._objects)
        except msgspec.ValidationError as error:
            raise codec.explained(self._documented, body, error) from None
        return codec.matrix_and_ids(rows, self._values)

    def _lists(self, instances: list[list]) -> np.ndarray:
        width = len(self._names)
        problems = [
            Violation(
                "instances",
                i,
                f"expected {width} numbers in the model's feature order",
                ("instances", i),
            )
            for i, values in enumerate(instances)
            if len(values) != width
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ]
        if problems:
            raise InvalidInput(problems)
        with np.errstate(over="ignore"):  # out of float32's range: refused by the matrix check
            return np.array(instances, dtype=np.float64).astype(np.float32)


def encode(decided: Decided, transaction_ids: list[str | None] | None) -> bytes:
    """`{"predictions": [{"fraud_probability", "is_fraud", "threshold", "model_tag"}, ...]}`,
    with each instance's `transaction_id` when it gave one."""
    ids = transaction_ids or [None] * len(decided.probabilities)
    predictions = []
    for transaction_id, probability, decision, threshold, tag in zip(
        ids,
        decided.probabilities.tolist(),
        decided.decisions.tolist(),
        decided.thresholds.tolist(),
        decided.tags,
        strict=True,
    ):
        prediction = {
            "fraud_probability": probability,
            "is_fraud": decision,
            "threshold": threshold,
            "model_tag": tag,
        }
        if transaction_id is not None:
            prediction["transaction_id"] = transaction_id
        predictions.append(prediction)
    return codec.encode({"predictions": predictions})


def in_instances(error: InvalidInput) -> InvalidInput:
    """A matrix check's problems located in the request: `["instances", row, feature]`."""
    return InvalidInput(
        [
            (
                Violation(v.field, v.row, v.reason, ("instances", v.row, v.field))
                if v.row is not None
                else v
            )
            for v in error.violations
        ]
    )
