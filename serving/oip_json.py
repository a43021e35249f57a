"""The Open Inference Protocol's HTTP/JSON binding: an inference request body in, the status and
response body out, decoded and encoded with msgspec. Served by the lean scoring path and by the
documented FastAPI route alike (serving/fast_path.py, serving/http_app.py)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec import Meta

from serving import oip, telemetry
from serving.batching import Overloaded
from serving.codec import encode
from serving.errors import InvalidInput
from serving.scorer import Scorer, request_id_or_new


class InferInputTensor(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: Any
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


def _error(message: str, status: int) -> tuple[int, bytes]:
    return status, encode({"error": message})


async def infer(scorer: Scorer, name: str, version: str | None, body: bytes) -> tuple[int, bytes]:
    """(HTTP status, JSON body) of one inference request; errors in the protocol's error body."""
    try:
        request = _DECODER.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        telemetry.record_rejection("oip_http", {"request"})
        return _error(f"invalid inference request: {error}", 400)
    model = scorer.model
    try:
        oip.check_model(model, name, version)
        if len(request.inputs) != 1:
            raise oip.OIPError(f"expected 1 input '{oip.INPUT_NAME}', got {len(request.inputs)}")
        tensor = request.inputs[0]
        try:
            values = np.asarray(tensor.data, dtype=np.float64).ravel()
        except (TypeError, ValueError) as error:
            raise oip.OIPError(f"input '{tensor.name}': data must be numbers ({error})") from error
        matrix = oip.to_matrix(tensor.name, tensor.datatype, tensor.shape, values)
        outputs = oip.requested_outputs([output.name for output in request.outputs or []])
        probabilities = await scorer.score(matrix, "oip_http", request_id_or_new(request.id))
    except oip.OIPError as error:
        if error.status == 400:
            telemetry.record_rejection("oip_http", {"request"})
        return _error(str(error), error.status)
    except InvalidInput as error:
        return _error(oip.invalid_input_message(error), 400)
    except Overloaded as error:
        return _error(str(error), 503)
    result = oip.InferResult(probabilities, model.threshold)
    return 200, encode(
        {
            "model_name": name,
            "model_version": model.version,
            "id": request.id,
            "outputs": [
                {
                    "name": output,
                    "shape": [len(probabilities)],
                    "datatype": oip.OUTPUT_DATATYPES[output],
                    "data": result.output(output).tolist(),
                }
                for output in outputs
            ],
        }
    )
