"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), on grpc.aio.

The generated stubs are the ones `tritonclient[grpc]` ships: one copy of the `inference` protos,
so no second generated package can clash with it in a process. Each API worker runs one server
on the same port (SO_REUSEPORT): the kernel spreads connections over the workers, and each
server feeds its own worker's batcher.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving import oip, traffic
from serving.errors import ServingError
from serving.scorer import Scorer, chosen_by_client, request_id_or_new

logger = logging.getLogger("fraud_bento.grpc")
TYPED_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    503: grpc.StatusCode.UNAVAILABLE,
}


def _tensor_metadata(spec: dict) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
    )


def request_inputs(request: pb.ModelInferRequest) -> list[oip.InputTensor]:
    """The request's tensors, from raw_input_contents (one per input) or typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise oip.OIPError(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        if raw:
            values = oip.values_from_bytes(tensor.name, tensor.datatype, raw[index])
        else:
            field = TYPED_CONTENTS.get(tensor.datatype)
            data = getattr(tensor.contents, field) if field else []
            values = oip.values_from_json(tensor.name, tensor.datatype, data)
        tensors.append(oip.InputTensor(tensor.name, tensor.datatype, list(tensor.shape), values))
    return tensors


def infer_response(request: pb.ModelInferRequest, decided, outputs: list[str]):
    """The ModelInferResponse of a decided request: each asked-for output as raw contents."""
    result = oip.InferResult(decided.probabilities, decided.decisions)
    response = pb.ModelInferResponse(
        model_name=request.model_name,
        model_version=decided.model_tag.split(":", 1)[1],
        id=request.id,
    )
    for name in outputs:
        values = result.output(name)
        response.outputs.add(
            name=name, datatype=oip.OUTPUT_DATATYPES[name], shape=list(values.shape)
        )
        response.raw_output_contents.append(values.tobytes())
    return response


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
        metadata = oip.model_metadata(self._scorer.model, self._challenger)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[_tensor_metadata(spec) for spec in metadata["inputs"]],
            outputs=[_tensor_metadata(spec) for spec in metadata["outputs"]],
        )

    async def ModelConfig(self, request, context):  # noqa: N802
        await self._check_model(request.name, request.version, context)
        return json_format.ParseDict(
            {"config": oip.model_config(self._scorer.model)}, pb.ModelConfigResponse()
        )

    @property
    def _challenger(self):
        return self._scorer.challenger.model if self._scorer.challenger is not None else None

    async def ModelInfer(self, request, context):  # noqa: N802
        model = self._scorer.model
        await self._check_model(request.model_name, request.model_version, context)
        try:
            matrix = oip.feature_matrix(model, request_inputs(request))
            outputs = oip.requested_outputs([output.name for output in request.outputs])
            decided = await self._scorer.decide(
                matrix,
                "grpc",
                request_id_or_new(request.id),
                durable=chosen_by_client(request.id),
                version=request.model_version or None,
            )
        except ServingError as error:
            if isinstance(error, oip.OIPError) and error.status == 400:
                traffic.record_rejection("grpc", {"request"})  # the scorer counts its own
            await _abort(context, oip.OIPError.of(error))
        except Exception:
            traffic.TALLY.add_outcome("grpc", "error")
            logger.exception("gRPC ModelInfer failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        return infer_response(request, decided, outputs)

    async def _check_model(self, name: str, version: str, context) -> None:
        try:
            oip.check_model(self._scorer.model, name, version, self._challenger)
        except oip.OIPError as error:
            await _abort(context, error)


async def _abort(context, error: ServingError) -> None:
    """The one mapping of serving errors to gRPC status codes."""
    await context.abort(_STATUS.get(error.status, grpc.StatusCode.INTERNAL), str(error))


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
