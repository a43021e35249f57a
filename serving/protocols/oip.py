"""The Open Inference Protocol (KServe v2) model: metadata, input decoding, output selection.

Shared by the HTTP/JSON binding (serving/http/http_app.py) and the gRPC binding
(serving/protocols/grpc_server.py); each binding only converts between its wire format and these
numpy-level types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.contract.refusals import InvalidInput, ServingError
from serving.scoring.runtime import FraudModel

PROTOCOL_VERSION = "2"
SERVER_NAME = "fraud-bento"
INPUT_NAME = "features"
PROBABILITY = "probability"
DECISION = "is_fraud"
OUTPUT_DATATYPES = {PROBABILITY: "FP32", DECISION: "BOOL"}
# The whole matrix comes as floats; one input per feature may also be integers or booleans (as
# MLServer's PandasCodec sends integer and boolean columns). Little-endian, as the protocol's raw
# and binary encodings are.
MATRIX_DATATYPES = ("FP32", "FP64")
FEATURE_DATATYPES = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP32": "<f4",
    "FP64": "<f8",
}
PLATFORM = "sklearn_randomforest"
# binary_tensor_data: the HTTP binary data extension; model_configuration: GET .../config and
# gRPC ModelConfig, where a gRPC client finds the feature order (its metadata has no parameters).
EXTENSIONS = ["binary_tensor_data", "model_configuration"]


class OIPError(ServingError):
    """An error the protocol reports in its error body `{"error": message}` (HTTP 4xx / a gRPC
    status). A malformed request is counted against its field "request"."""

    def __init__(self, message: str, status: int = 400, outcome: str | None = None, fields=None):
        self.status = status
        self.outcome = outcome or ("invalid" if status == 400 else "not_found")
        self._fields = (
            set(fields) if fields is not None else ({"request"} if status == 400 else set())
        )
        super().__init__(message)

    def fields(self) -> set[str]:
        return self._fields

    @classmethod
    def of(cls, error: ServingError) -> OIPError:
        """Any serving error in the protocol's terms (its body carries only the message)."""
        if isinstance(error, OIPError):
            return error
        message = (
            f"input '{INPUT_NAME}': {error}" if isinstance(error, InvalidInput) else str(error)
        )
        refused = cls(message, error.status, error.outcome, error.fields())
        refused.headers = error.headers
        return refused


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": PROTOCOL_VERSION, "extensions": EXTENSIONS}


def model_metadata(model: FraudModel, challenger: FraudModel | None = None) -> dict:
    """The champion's metadata; `versions` also lists the challenger's (addressable by it)."""
    n_features = len(model.feature_names)
    return {
        "name": model.name,
        "versions": [model.version] + ([challenger.version] if challenger is not None else []),
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


def check_model(
    model: FraudModel, name: str, version: str | None, challenger: FraudModel | None = None
) -> None:
    """The name must be the served model's; a version, the champion's or the challenger's."""
    expected = model.name
    if name != expected:
        raise OIPError(f"unknown model '{name}': this server serves '{expected}'", status=404)
    versions = [model.version] + ([challenger.version] if challenger is not None else [])
    if version not in (None, "", *versions):
        raise OIPError(
            f"unknown version '{version}' of {name}: this server serves {', '.join(versions)}",
            status=404,
        )


def model_config(model: FraudModel) -> dict:
    """The model configuration (Triton's extension, as its JSON and its gRPC message take it):
    the input, the outputs and the feature order in `parameters`."""
    return {
        "name": model.name,
        "platform": PLATFORM,
        "max_batch_size": 0,
        "input": [
            {"name": INPUT_NAME, "data_type": "TYPE_FP32", "dims": [-1, len(model.feature_names)]}
        ],
        "output": [
            {"name": PROBABILITY, "data_type": "TYPE_FP32", "dims": [-1]},
            {"name": DECISION, "data_type": "TYPE_BOOL", "dims": [-1]},
        ],
        "parameters": {"feature_order": {"string_value": ",".join(model.feature_names)}},
    }


@dataclass(frozen=True)
class InputTensor:
    """One decoded input: its values flat, in the order the protocol lays them out."""

    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray


def _check_datatype(name: str, datatype: str) -> None:
    if datatype not in FEATURE_DATATYPES:
        raise OIPError(
            f"input '{name}': datatype {datatype} is not supported, use FP32 or FP64 "
            f"(one input per feature may also be {', '.join(list(FEATURE_DATATYPES)[:-2])})"
        )


def values_from_bytes(name: str, datatype: str, raw: bytes | memoryview) -> np.ndarray:
    """Values of a raw (gRPC) or binary (HTTP extension) tensor."""
    _check_datatype(name, datatype)
    dtype = np.dtype(FEATURE_DATATYPES[datatype])
    if len(raw) % dtype.itemsize:
        raise OIPError(
            f"input '{name}': {len(raw)} bytes is not a whole number of {datatype} values"
        )
    return np.frombuffer(raw, dtype=dtype)


def values_from_json(name: str, datatype: str, data) -> np.ndarray:
    _check_datatype(name, datatype)
    try:
        # Straight to the matrix's float32; out of its range: inf, refused by the matrix check.
        with np.errstate(over="ignore"):
            return np.asarray(data, dtype=np.float32).ravel()
    except (TypeError, ValueError) as error:
        raise OIPError(f"input '{name}': data must be numbers ({error})") from error


def _check_size(name: str, shape: list[int], values: np.ndarray) -> None:
    expected = int(np.prod(shape))
    if values.size != expected:
        raise OIPError(f"input '{name}': shape {shape} needs {expected} values, got {values.size}")


def to_matrix(name: str, datatype: str, shape: list[int], values: np.ndarray) -> np.ndarray:
    """The [N, n_features] float32 matrix of one input tensor, or OIPError naming the problem."""
    if name != INPUT_NAME:
        raise OIPError(f"unknown input '{name}': the model takes one input '{INPUT_NAME}'")
    if datatype not in MATRIX_DATATYPES:
        raise OIPError(f"input '{name}': datatype {datatype} is not supported, use FP32 (or FP64)")
    if len(shape) != 2 or any(dim < 0 for dim in shape):
        raise OIPError(f"input '{name}': shape must be [N, n_features], got {shape}")
    _check_size(name, shape, values)
    return values.astype(np.float32, copy=False).reshape(shape)


def feature_matrix(model: FraudModel, inputs: list[InputTensor]) -> np.ndarray:
    """The [N, n_features] matrix of a request: one input `features`, or one input per feature
    by name (any order, each [N] or [N, 1], as MLServer's PandasCodec sends a data frame)."""
    if not inputs:
        raise OIPError(f"no input: send '{INPUT_NAME}' or one input per feature")
    if len(inputs) == 1 and inputs[0].name == INPUT_NAME:
        tensor = inputs[0]
        return to_matrix(tensor.name, tensor.datatype, tensor.shape, tensor.values)
    names = model.feature_names
    position = {name: index for index, name in enumerate(names)}
    columns: dict[str, InputTensor] = {}
    for tensor in inputs:
        if tensor.name not in position:
            raise OIPError(
                f"unknown input '{tensor.name}': send one input '{INPUT_NAME}' [N, "
                f"{len(names)}] or one input per feature, named {', '.join(names)}"
            )
        if tensor.name in columns:
            raise OIPError(f"input '{tensor.name}' is given twice")
        if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)) or any(
            dim < 0 for dim in tensor.shape
        ):
            raise OIPError(
                f"input '{tensor.name}': shape must be [N] or [N, 1], got {tensor.shape}"
            )
        _check_size(tensor.name, tensor.shape, tensor.values)
        columns[tensor.name] = tensor
    missing = [name for name in names if name not in columns]
    if missing:
        raise OIPError(
            f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)}: one input per "
            f"feature needs all {len(names)}"
        )
    rows = {tensor.shape[0] for tensor in inputs}
    if len(rows) > 1:
        raise OIPError(f"inputs disagree on the number of rows: {sorted(rows)}")
    matrix = np.empty((rows.pop(), len(names)), dtype=np.float32)
    for name, tensor in columns.items():
        matrix[:, position[name]] = tensor.values
    return matrix


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
    decisions: np.ndarray

    def output(self, name: str) -> np.ndarray:
        if name == PROBABILITY:
            return self.probabilities.astype(np.float32)
        return self.decisions.astype(np.bool_)
