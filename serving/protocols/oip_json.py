"""The Open Inference Protocol's HTTP/JSON binding: an inference request body in, the response
body out (or an OIPError), decoded and encoded with msgspec. Served by the lean scoring path and
by the documented FastAPI route alike, through `ScoringEndpoints.infer`."""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

import msgspec
from msgspec import Meta

from serving.contract.refusals import ServingError
from serving.protocols import oip
from serving.protocols.codec import encode
from serving.scoring.scorer import Scorer, chosen_by_client


class InferInputTensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: Any = None  # absent when the tensor is binary (parameters.binary_data_size)
    parameters: dict[str, Any] | None = None


class InferRequestedOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(msgspec.Struct):
    inputs: Annotated[list[InferInputTensor], Meta(min_length=1)]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferRequestedOutput] | None = None


_DECODER = msgspec.json.Decoder(InferRequest)
HEADER_LENGTH = "inference-header-content-length"
PROTOCOL = "oip_http"  # the label its requests are counted under
BINARY_SIZE = "binary_data_size"


class Reply(NamedTuple):
    """An answer's body, and the length of its JSON part when binary data follow it (sent as
    Inference-Header-Content-Length, with Content-Type application/octet-stream)."""

    body: bytes
    json_length: int | None = None


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary part of a body (the binary data extension)."""
    if header_length is None:
        return body, memoryview(b"")
    if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
        raise oip.OIPError(
            f"Inference-Header-Content-Length {header_length!r} must be the length of the JSON "
            f"header, within the body's {len(body)} bytes"
        )
    length = int(header_length)
    return body[:length], memoryview(body)[length:]


def _inputs(request: InferRequest, binary: memoryview) -> list[oip.InputTensor]:
    tensors, offset = [], 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get(BINARY_SIZE)
        if size is None:
            if tensor.data is None:
                raise oip.OIPError(f"input '{tensor.name}' has no data nor {BINARY_SIZE}")
            values = oip.values_from_json(tensor.name, tensor.datatype, tensor.data)
        else:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise oip.OIPError(
                    f"input '{tensor.name}': {BINARY_SIZE} {size!r} runs past the "
                    f"{len(binary)} bytes of binary data after the JSON header"
                )
            values = oip.values_from_bytes(
                tensor.name, tensor.datatype, binary[offset : offset + size]
            )
            offset += size
        tensors.append(oip.InputTensor(tensor.name, tensor.datatype, tensor.shape, values))
    if offset != len(binary):
        raise oip.OIPError(
            f"{len(binary) - offset} bytes of binary data follow the inputs' {BINARY_SIZE} total"
        )
    return tensors


def _binary_outputs(request: InferRequest, names: list[str]) -> list[bool]:
    """Per output: binary when its `binary_data` parameter says so, else as the request's
    `binary_data_output` parameter says (JSON by default)."""
    default = bool((request.parameters or {}).get("binary_data_output", False))
    asked = {output.name: output.parameters or {} for output in request.outputs or []}
    return [bool(asked.get(name, {}).get("binary_data", default)) for name in names]


def _encode_response(
    request: InferRequest, name: str, version: str, names: list[str], result: oip.InferResult
) -> Reply:
    outputs, binary = [], []
    for output, as_binary in zip(names, _binary_outputs(request, names), strict=True):
        values = result.output(output)
        tensor = {"name": output, "shape": [len(values)], "datatype": oip.OUTPUT_DATATYPES[output]}
        if as_binary:
            raw = values.tobytes()
            tensor["parameters"] = {BINARY_SIZE: len(raw)}
            binary.append(raw)
        else:
            tensor["data"] = values.tolist()
        outputs.append(tensor)
    header = encode(
        {"model_name": name, "model_version": version, "id": request.id, "outputs": outputs}
    )
    if not binary:
        return Reply(header)
    return Reply(b"".join([header, *binary]), len(header))


def _request_id(given: str | None, fallback: tuple[str, bool]) -> tuple[str, bool]:
    return (given, True) if chosen_by_client(given) else fallback


async def infer(
    scorer: Scorer,
    name: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
    request_id: tuple[str, bool],
) -> Reply:
    """The answer to one inference request (JSON, or with the binary data extension when
    `header_length`, the Inference-Header-Content-Length header, is given). The request's id is
    its OIP `id` when the caller gave a sane one, else `request_id` (the HTTP request's id and
    whether the caller chose it)."""
    model = scorer.model
    try:
        header, binary = _split(body, header_length)
        try:
            request = _DECODER.decode(header)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            raise oip.OIPError(f"invalid inference request: {error}") from error
        challenger = scorer.challenger.model if scorer.challenger is not None else None
        oip.check_model(model, name, version, challenger)
        matrix = oip.feature_matrix(model, _inputs(request, binary))
        outputs = oip.requested_outputs([output.name for output in request.outputs or []])
        identity, durable = _request_id(request.id, request_id)
        decided = await scorer.decide(matrix, PROTOCOL, identity, durable=durable, version=version)
    except ServingError as error:
        raise oip.OIPError.of(error) from None
    result = oip.InferResult(decided.probabilities, decided.decisions)
    version = decided.model_tag.split(":", 1)[1]  # the model that decided
    return _encode_response(request, name, version, outputs, result)
