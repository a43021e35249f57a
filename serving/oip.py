"""The Open Inference Protocol (KServe v2) model: metadata, input decoding, output selection.

Shared by the HTTP/JSON binding (serving/http_app.py) and the gRPC binding (serving/grpc_server.py);
each binding only converts between its wire format and these numpy-level types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.errors import InvalidInput
from serving.runtime import FraudModel

PROTOCOL_VERSION = "2"
SERVER_NAME = "fraud-bento"
INPUT_NAME = "features"
PROBABILITY = "probability"
DECISION = "is_fraud"
OUTPUT_DATATYPES = {PROBABILITY: "FP32", DECISION: "BOOL"}
INPUT_DATATYPES = {"FP32": np.float32, "FP64": np.float64}
PLATFORM = "sklearn_randomforest"


class OIPError(Exception):
    """An error the protocol reports in its error body (HTTP 4xx / a gRPC status)."""

    def __init__(self, message: str, status: int = 400):
        self.status = status
        super().__init__(message)


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": PROTOCOL_VERSION, "extensions": []}


def model_metadata(model: FraudModel) -> dict:
    n_features = len(model.feature_names)
    return {
        "name": model.stored.tag.split(":")[0],
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": [
            {
                "name": INPUT_NAME,
                "datatype": "FP32",
                "shape": [-1, n_features],
                "parameters": {"feature_order": ",".join(model.feature_names)},
            }
        ],
        "outputs": [
            {"name": PROBABILITY, "datatype": "FP32", "shape": [-1]},
            {"name": DECISION, "datatype": "BOOL", "shape": [-1]},
        ],
    }


def check_model(model: FraudModel, name: str, version: str | None) -> None:
    expected = model.stored.tag.split(":")[0]
    if name != expected:
        raise OIPError(f"unknown model '{name}': this server serves '{expected}'", status=404)
    if version not in (None, "", model.version):
        raise OIPError(
            f"unknown version '{version}' of {name}: this server serves {model.version}",
            status=404,
        )


def to_matrix(name: str, datatype: str, shape: list[int], values: np.ndarray) -> np.ndarray:
    """The [N, n_features] float32 matrix of one input tensor, or OIPError naming the problem."""
    if name != INPUT_NAME:
        raise OIPError(f"unknown input '{name}': the model takes one input '{INPUT_NAME}'")
    if datatype not in INPUT_DATATYPES:
        raise OIPError(f"input '{name}': datatype {datatype} is not supported, use FP32 (or FP64)")
    if len(shape) != 2 or any(dim < 0 for dim in shape):
        raise OIPError(f"input '{name}': shape must be [N, n_features], got {shape}")
    expected = int(np.prod(shape))
    if values.size != expected:
        raise OIPError(f"input '{name}': shape {shape} needs {expected} values, got {values.size}")
    return values.astype(np.float32, copy=False).reshape(shape)


def requested_outputs(names: list[str]) -> list[str]:
    """The outputs to return, in request order; all of them when none is named."""
    if not names:
        return list(OUTPUT_DATATYPES)
    unknown = [name for name in names if name not in OUTPUT_DATATYPES]
    if unknown:
        raise OIPError(
            f"unknown output {', '.join(unknown)}: outputs are {', '.join(OUTPUT_DATATYPES)}"
        )
    return names


@dataclass(frozen=True)
class InferResult:
    probabilities: np.ndarray
    threshold: float

    def output(self, name: str) -> np.ndarray:
        if name == PROBABILITY:
            return self.probabilities.astype(np.float32)
        return self.probabilities >= self.threshold


def invalid_input_message(error: InvalidInput) -> str:
    return f"input '{INPUT_NAME}': {error}"
