"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), on grpcio's
thread-pool server.

Its pool threads parse, check and answer each call; the scoring itself is handed to the worker's
event loop (its batcher) and waited for. Measured against grpcio's asyncio server and grpclib on
one core (ops/bench/grpc_servers.py; docs/performance.md): the asyncio server cost ~500 µs of
CPU a 1-row call, this one ~200, grpclib ~290. The generated stubs are the ones
`tritonclient[grpc]` ships: one copy of the `inference` protos, so no second generated package
can clash with it in a process. Each API worker runs one server on the same port
(SO_REUSEPORT): the kernel spreads connections over the workers, and each server feeds its own
worker's batcher.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.contract.refusals import Overloaded, ServingError
from serving.protocols import oip
from serving.scoring.admission import Admission
from serving.scoring.scorer import Scorer, chosen_by_client, request_id_or_new
from serving.telemetry import traffic

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
PROTOCOL = "grpc"  # the label its calls and refusals are counted under
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
# gRPC's own word for "refused for want of capacity"; other 503s (no state, shutting down) stay
# UNAVAILABLE.
_STATUS_OF_OUTCOME = {Overloaded.outcome: grpc.StatusCode.RESOURCE_EXHAUSTED}


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


# Calls in progress at once: each waits on the event loop for its scores, so enough of them
# for the batcher to gather a batch (more only contend for the GIL on the worker's core).
POOL_THREADS = 16


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, scorer: Scorer, admission: Admission, loop: asyncio.AbstractEventLoop):
        self._scorer = scorer
        self._admission = admission
        self._loop = loop

    def ServerLive(self, request, context):  # noqa: N802 - protocol names
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return pb.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request, context):  # noqa: N802
        return pb.ServerMetadataResponse(**oip.server_metadata())

    def ModelReady(self, request, context):  # noqa: N802
        self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=True)

    def ModelMetadata(self, request, context):  # noqa: N802
        self._check_model(request.name, request.version, context)
        metadata = oip.model_metadata(self._scorer.model, self._challenger)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[_tensor_metadata(spec) for spec in metadata["inputs"]],
            outputs=[_tensor_metadata(spec) for spec in metadata["outputs"]],
        )

    def ModelConfig(self, request, context):  # noqa: N802
        self._check_model(request.name, request.version, context)
        return json_format.ParseDict(
            {"config": oip.model_config(self._scorer.model)}, pb.ModelConfigResponse()
        )

    @property
    def _challenger(self):
        return self._scorer.challenger.model if self._scorer.challenger is not None else None

    def ModelInfer(self, request, context):  # noqa: N802
        try:
            ticket = self._admission.admit(PROTOCOL, size=request.ByteSize())
        except Overloaded as error:
            refuse(context, error)
        try:
            return self._infer(request, context)
        finally:
            ticket.done()

    def _infer(self, request, context):
        model = self._scorer.model
        self._check_model(request.model_name, request.model_version, context)
        try:
            matrix = oip.feature_matrix(model, request_inputs(request))
            outputs = oip.requested_outputs([output.name for output in request.outputs])
            scoring = self._scorer.decide(
                matrix,
                PROTOCOL,
                request_id_or_new(request.id),
                durable=chosen_by_client(request.id),
                version=request.model_version or None,
            )
            decided = asyncio.run_coroutine_threadsafe(scoring, self._loop).result()
        except ServingError as error:
            refuse(context, oip.OIPError.of(error))
        except Exception:
            logger.exception("gRPC ModelInfer failed")
            refuse(context, ServingError("internal error"))
        return infer_response(request, decided, outputs)

    def _check_model(self, name: str, version: str, context) -> None:
        try:
            oip.check_model(self._scorer.model, name, version, self._challenger)
        except oip.OIPError as error:
            refuse(context, error)


def refuse(context, error: ServingError) -> None:
    """The one way a refusal becomes a gRPC status, and is counted (raises: the call ends)."""
    traffic.record_refusal(PROTOCOL, error.outcome, error.fields(), error.security)
    code = _STATUS_OF_OUTCOME.get(error.outcome) or _STATUS.get(error.status)
    context.abort(code or grpc.StatusCode.INTERNAL, str(error))


async def start(
    scorer: Scorer,
    admission: Admission,
    host: str,
    port: int,
    max_message_bytes: int,
    interceptors: tuple[grpc.ServerInterceptor, ...] = (),
) -> grpc.Server:
    """The server, started, its calls scored on the running event loop."""
    server = grpc.server(
        ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )
    servicer = InferenceServicer(scorer, admission, asyncio.get_running_loop())
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    if not server.add_insecure_port(f"{host}:{port}"):
        raise OSError(f"gRPC: cannot bind {host}:{port}")
    server.start()
    return server


async def stop(server: grpc.Server, grace_s: float) -> None:
    """Stop taking calls; wait up to `grace_s` for those in progress (their scoring needs the
    event loop, so the wait happens off it)."""
    await asyncio.to_thread(server.stop(grace_s).wait)
