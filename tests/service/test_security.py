"""API keys, rate limits and size limits on a real server, over HTTP and gRPC."""

from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from settings import ColumnsConfig
from tests.service.conftest import start_server, stop_server
from training.features import feature_names

pytestmark = pytest.mark.slow
KEY, OTHER_KEY = "test-key-0123456789abcdef", "other-key-0123456789abcdef"
ORDER = feature_names(ColumnsConfig())


@pytest.fixture(scope="module")
def guarded(served_tag, tmp_path_factory):
    keys = tmp_path_factory.mktemp("secret") / "api-keys"
    keys.write_text(f"# one key per line\n{OTHER_KEY}\n")
    server = start_server(
        ".",
        tmp_path_factory.mktemp("guarded") / "serve.log",
        env={
            "FRAUD_API_KEYS": KEY,
            "FRAUD_SECURITY__API_KEYS_FILE": str(keys),
            "FRAUD_SECURITY__METRICS_OPEN": "false",
            "FRAUD_SECURITY__MAX_BODY_BYTES": "20000",
            "FRAUD_SECURITY__MAX_GRPC_MESSAGE_BYTES": "20000",
        },
    )
    assert server.process.poll() is None, server.output()[-3000:]
    yield server
    stop_server(server)


def _predict(server, rows, **headers) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", json={"transactions": rows}, headers=headers)


def test_every_endpoint_but_the_probes_needs_a_key(guarded, transactions):
    for method, path in [
        ("POST", "/predict"),
        ("POST", "/feedback"),
        ("GET", "/model_info"),
        ("GET", "/stats"),
        ("GET", "/drift"),
        ("GET", "/docs.json"),
        ("GET", "/metrics"),
        ("POST", "/v2/models/fraud_rf/infer"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"X-API-Key": ""}):
            response = httpx.request(method, f"{guarded.url}{path}", headers=headers, json={})
            assert response.status_code == 401, (path, headers, response.text)
            assert response.json() == {"error": "unauthorized"}
    for path in ("/livez", "/readyz", "/v2/health/ready"):
        assert httpx.get(f"{guarded.url}{path}").status_code == 200
    assert _predict(guarded, transactions[:2], authorization=f"Bearer {KEY}").status_code == 200
    assert _predict(guarded, transactions[:2], **{"x-api-key": OTHER_KEY}).status_code == 200
    metrics = httpx.get(f"{guarded.url}/metrics", headers={"X-API-Key": KEY}).text
    assert 'fraud_security_refusals_total{protocol="http",reason="unauthenticated"}' in metrics


def test_bodies_past_the_limit_get_413_before_scoring(guarded, transactions):
    auth = {"X-API-Key": KEY}
    big = _predict(guarded, transactions[:100], **auth)
    assert big.status_code == 413 and "20000 bytes" in big.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"transactions": ['
        for _ in range(2000):  # 38 kB
            yield b'{"tx_amount": 1.0},'
        yield b"{}]}"

    streamed = httpx.post(f"{guarded.url}/predict", content=chunks(), headers=auth)
    assert streamed.status_code == 413
    assert _predict(guarded, transactions[:2], **auth).status_code == 200


def _infer_request(transactions, rows: int) -> pb.ModelInferRequest:
    matrix = np.array([[t[name] for name in ORDER] for t in transactions[:rows]], np.float32)
    request = pb.ModelInferRequest(model_name="fraud_rf")
    request.inputs.add(name="features", datatype="FP32", shape=list(matrix.shape))
    request.raw_input_contents.append(matrix.tobytes())
    return request


def test_grpc_needs_a_key_and_bounds_message_size(guarded, transactions):
    with grpc.insecure_channel(f"127.0.0.1:{guarded.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        request = _infer_request(transactions, 5)
        for metadata in ((), (("authorization", "Bearer nope-0123456789abcdef"),)):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = stub.ModelInfer(request, metadata=(("x-api-key", KEY),), timeout=10)
        assert np.frombuffer(answer.raw_output_contents[0], np.float32).shape == (5,)
        with pytest.raises(grpc.RpcError) as too_big:
            stub.ModelInfer(_infer_request(transactions, 300), metadata=(("x-api-key", KEY),))
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready


def test_rate_limit_per_key_with_retry_after(served_tag, transactions, tmp_path):
    server = start_server(
        ".",
        tmp_path / "serve.log",
        env={
            "FRAUD_API_KEYS": f"{KEY},{OTHER_KEY}",
            "FRAUD_SECURITY__RATE_LIMIT_PER_S": "2",
            "FRAUD_SECURITY__RATE_LIMIT_BURST": "5",
        },
    )
    try:
        answers = [_predict(server, transactions[:1], **{"x-api-key": KEY}) for _ in range(8)]
        codes = [a.status_code for a in answers]
        assert codes[:5] == [200] * 5 and 429 in codes[5:], codes
        limited = next(a for a in answers if a.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        # Another key has its own bucket.
        assert _predict(server, transactions[:1], **{"x-api-key": OTHER_KEY}).status_code == 200
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            codes = []
            for _ in range(8):
                try:
                    stub.ModelInfer(
                        _infer_request(transactions, 1), metadata=(("x-api-key", OTHER_KEY),)
                    )
                    codes.append("OK")
                except grpc.RpcError as error:
                    codes.append(error.code().name)
            assert "RESOURCE_EXHAUSTED" in codes, codes
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'reason="rate_limited"' in metrics
    finally:
        stop_server(server)


def test_grpc_malformed_messages_are_invalid_argument(guarded, transactions):
    with grpc.insecure_channel(f"127.0.0.1:{guarded.grpc_port}") as channel:
        raw_infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x80", bytes(range(256))[:100]):
            with pytest.raises(grpc.RpcError) as refused:
                raw_infer(garbage, metadata=(("x-api-key", KEY),), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, garbage
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(_infer_request(transactions, 3), metadata=(("x-api-key", KEY),))
        assert len(answer.raw_output_contents[0]) == 3 * 4  # the server still answers
