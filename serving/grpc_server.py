"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), on grpc.aio.

The generated stubs are the ones `tritonclient[grpc]` ships: one copy of the `inference` protos,
so no second generated package can clash with it in a process. Each API worker runs one server
on the same port (SO_REUSEPORT): the kernel spreads connections over the workers, and each
server feeds its own worker's batcher.
"""

from __future__ import annotations

import logging

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving import oip, telemetry
from serving.batching import Overloaded
from serving.errors import InvalidInput
from serving.scorer import Scorer, request_id_or_new

logger = logging.getLogger("fraud_bento.grpc")
RAW_DTYPES = {"FP32": "<f4", "FP64": "<f8"}
TYPED_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents"}
_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}


def _tensor_metadata(spec: dict) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
    )


def _input_matrix(request: pb.ModelInferRequest) -> np.ndarray:
    if len(request.inputs) != 1:
        raise oip.OIPError(f"expected 1 input '{oip.INPUT_NAME}', got {len(request.inputs)}")
    tensor = request.inputs[0]
    shape = list(tensor.shape)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise oip.OIPError("raw_input_contents must hold exactly one tensor")
        dtype = RAW_DTYPES.get(tensor.datatype)
        raw = request.raw_input_contents[0]
        if dtype is None:
            return oip.to_matrix(tensor.name, tensor.datatype, shape, np.empty(0))
        if len(raw) % np.dtype(dtype).itemsize:
            raise oip.OIPError(
                f"input '{tensor.name}': {len(raw)} raw bytes is not a whole number of "
                f"{tensor.datatype} values"
            )
        values = np.frombuffer(raw, dtype=dtype)
    else:
        field = TYPED_CONTENTS.get(tensor.datatype)
        values = np.asarray(getattr(tensor.contents, field) if field else [], dtype=np.float64)
    return oip.to_matrix(tensor.name, tensor.datatype, shape, values)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, scorer: Scorer):
        self._scorer = scorer

    async def ServerLive(self, request, context):  # noqa: N802 - protocol names
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):  # noqa: N802
        return pb.ServerMetadataResponse(**oip.server_metadata())

    async def ModelReady(self, request, context):  # noqa: N802
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request, context):  # noqa: N802
        await self._check_model(request.name, request.version, context)
        metadata = oip.model_metadata(self._scorer.model)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[_tensor_metadata(spec) for spec in metadata["inputs"]],
            outputs=[_tensor_metadata(spec) for spec in metadata["outputs"]],
        )

    async def ModelInfer(self, request, context):  # noqa: N802
        model = self._scorer.model
        await self._check_model(request.model_name, request.model_version, context)
        try:
            matrix = _input_matrix(request)
            outputs = oip.requested_outputs([output.name for output in request.outputs])
            probabilities = await self._scorer.score(matrix, "grpc", request_id_or_new(request.id))
        except oip.OIPError as error:
            telemetry.record_rejection("grpc", {"request"})
            await context.abort(_STATUS.get(error.status, grpc.StatusCode.INTERNAL), str(error))
        except InvalidInput as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, oip.invalid_input_message(error))
        except Overloaded as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        except Exception:
            telemetry.TALLY.add_outcome("grpc", "error")
            logger.exception("gRPC ModelInfer failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        result = oip.InferResult(probabilities, model.threshold)
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=model.version, id=request.id
        )
        for name in outputs:
            values = result.output(name)
            response.outputs.add(
                name=name, datatype=oip.OUTPUT_DATATYPES[name], shape=list(values.shape)
            )
            response.raw_output_contents.append(values.tobytes())
        return response

    async def _check_model(self, name: str, version: str, context) -> None:
        try:
            oip.check_model(self._scorer.model, name, version)
        except oip.OIPError as error:
            await context.abort(_STATUS[error.status], str(error))


async def start(
    scorer: Scorer,
    host: str,
    port: int,
    max_message_bytes: int,
    interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (),
) -> grpc.aio.Server:
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(scorer), server)
    if not server.add_insecure_port(f"{host}:{port}"):
        raise OSError(f"gRPC: cannot bind {host}:{port}")
    await server.start()
    return server
