"""The gRPC server as chosen (grpcio's thread pool, the scoring on the worker's event loop), in
process on a real channel: more calls at once than pool threads are each answered with the
model's own scores, and calls in flight when it stops are answered."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.protocols import grpc_server
from serving.scoring.admission import QUEUE_FLOOR, Admission
from serving.scoring.runtime import FraudModel
from serving.scoring.scorer import Scorer
from settings import ServingConfig
from tests.code.models import small_model

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> FraudModel:
    return small_model(3)


def _request(matrix: np.ndarray, request_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="fraud_rf", id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=list(matrix.shape))
    request.raw_input_contents.append(matrix.tobytes())
    request.outputs.add(name="probability")
    return request


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(model: FraudModel, calls, slow_s: float = 0.0, admission: Admission | None = None):
    """Start the server on a fresh event loop, run `calls(stub)` from other threads while it
    serves (told to stop `slow_s / 2` in, when given), and return what `calls` returned."""
    scorer = Scorer(model, ServingConfig())
    port = _free_port()
    admission = admission or Admission(0)

    async def run():
        server = await grpc_server.start(scorer, admission, "127.0.0.1", port, 4 * 1024 * 1024)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            pending = asyncio.get_running_loop().run_in_executor(None, calls, stub)
            if slow_s:
                await asyncio.sleep(slow_s / 2)  # the calls are being scored
                await grpc_server.stop(server, grace_s=10)
            return await pending
        finally:
            channel.close()
            await grpc_server.stop(server, grace_s=0)

    try:
        return asyncio.run(run())
    finally:
        scorer.shutdown()


def _valid_rows(model: FraudModel) -> np.ndarray:
    """The example request's transactions (valid under the features' contract)."""
    example = json.loads((REPO_ROOT / "ops" / "examples" / "test_request.json").read_text())
    rows = example["transactions"]
    return np.array([[row[name] for name in model.feature_names] for row in rows], np.float32)


def test_more_calls_at_once_than_pool_threads_are_each_answered(model):
    rows = _valid_rows(model)
    matrices = [np.roll(rows, i, axis=0)[: 1 + i % len(rows)] for i in range(64)]
    assert len(matrices) > 2 * grpc_server.POOL_THREADS

    def calls(stub):
        with ThreadPoolExecutor(len(matrices)) as clients:
            answers = clients.map(
                lambda pair: stub.ModelInfer(_request(pair[1], f"r{pair[0]}"), timeout=30),
                enumerate(matrices),
            )
            return list(answers)

    answers = _serve(model, calls)
    for index, (matrix, answer) in enumerate(zip(matrices, answers, strict=True)):
        assert answer.id == f"r{index}"
        scores = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)
        np.testing.assert_allclose(scores, model.predict_proba(matrix), rtol=1e-6)


def test_calls_in_flight_when_the_server_stops_are_answered(model, monkeypatch):
    matrix = _valid_rows(model)
    predict = model.predict_proba

    def slow(rows):  # calls are still being scored when the server is told to stop
        threading.Event().wait(1.0)
        return predict(rows)

    monkeypatch.setattr(model, "predict_proba", slow)

    def calls(stub):
        with ThreadPoolExecutor(4) as clients:
            futures = [
                clients.submit(stub.ModelInfer, _request(matrix, f"late{i}"), timeout=30)
                for i in range(4)
            ]
            return [future.result() for future in futures]

    answers = _serve(model, calls, slow_s=1.0)
    assert [answer.id for answer in answers] == [f"late{i}" for i in range(4)]


def test_over_the_queue_target_a_call_is_refused_as_resource_exhausted_until_the_queue_drains(
    model,
):
    clock = [0.0]
    admission = Admission(20, clock=lambda: clock[0])
    # other protocols' requests, in the same queue
    in_progress = [admission.admit("http") for _ in range(QUEUE_FLOOR)]
    clock[0] += 1.0

    def calls(stub):
        request = _request(_valid_rows(model), "over-target")
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request)
        for ticket in in_progress:
            ticket.done()
        return refused.value, stub.ModelInfer(request)

    refused, answered = _serve(model, calls, admission=admission)
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "admission_target_ms" in refused.details()
    assert answered.id == "over-target"
