"""The scoring pipeline in process: BentoML's own ASGI application of the service (the front door,
the security checks, the lean path, the typed endpoints and the mounted routes), driven through an
in-process transport, and the gRPC servicer it starts, on a real channel: every request form,
and its refusals, in seconds and without a server process (the `pipeline` fixture)."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.http import routes

MODEL = "fraud_rf"


def _rows(transactions, count=3):
    return transactions[:count]


def _names(transactions) -> list[str]:
    return [name for name in transactions[0] if name != "transaction_id"]


def test_rows_score_like_the_engine_and_echo_ids(pipeline, transactions, offline_probabilities):
    response = pipeline.post(
        "/predict", json={"transactions": _rows(transactions)}, headers={"X-Request-ID": "p-1"}
    )
    assert response.status_code == 200 and response.headers["x-request-id"] == "p-1"
    body = response.json()
    assert body["request_id"] == "p-1"
    probabilities = [p["fraud_probability"] for p in body["predictions"]]
    np.testing.assert_allclose(probabilities, offline_probabilities[:3], atol=1e-6)
    ids = [p["transaction_id"] for p in body["predictions"]]
    assert ids == [row["transaction_id"] for row in _rows(transactions)]


def test_a_refused_row_body_names_every_problem(pipeline, transactions):
    rows = [transactions[0], {**transactions[1], "tx_amount": -1, "surprise": 2}]
    response = pipeline.post("/predict", json={"transactions": rows})
    assert response.status_code == 400 and response.headers["x-request-id"]
    locations = {tuple(d["loc"]) for d in response.json()["detail"]}
    assert locations == {("transactions", 1, "tx_amount"), ("transactions", 1, "surprise")}
    too_many = pipeline.post("/predict", json={"transactions": [transactions[0]] * 1001})
    assert too_many.status_code == 400
    assert too_many.json()["detail"][0]["loc"] == ["transactions"]
    not_json = pipeline.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["detail"][0]["type"] == "json_invalid"


def test_columns_score_and_name_every_problem(pipeline, transactions, offline_probabilities):
    names = _names(transactions)[::-1]
    rows = _rows(transactions)
    body = {"columns": names, "data": [[row[n] for n in names] for row in rows]}
    scored = pipeline.post("/predict_columns", json=body)
    assert scored.status_code == 200
    probabilities = [p["fraud_probability"] for p in scored.json()["predictions"]]
    np.testing.assert_allclose(probabilities, offline_probabilities[:3], atol=1e-6)
    bad = {**body, "data": [[-1.0, *body["data"][0][1:]], body["data"][1][:-1]]}
    bad["transaction_ids"] = ["a"]
    refused = pipeline.post("/predict_columns", json=bad)
    assert refused.status_code == 400
    assert [d["loc"] for d in refused.json()["detail"]] == [["data", 1], ["transaction_ids"]]
    values = pipeline.post(
        "/predict_columns", json={**body, "data": [[-1.0, *body["data"][0][1:]]]}
    )
    assert values.json()["detail"][0]["loc"] == ["data", 0, names[0]]


def test_oip_json_binary_and_kserve_v1_agree_with_rows(pipeline, transactions):
    config = pipeline.get(f"/v2/models/{MODEL}/config").json()
    order = config["parameters"]["feature_order"]["string_value"].split(",")
    matrix = np.array([[row[n] for n in order] for row in _rows(transactions)], np.float32)
    expected = pipeline.post("/predict", json={"transactions": _rows(transactions)}).json()
    wanted = [p["fraud_probability"] for p in expected["predictions"]]
    tensor = {"name": "features", "datatype": "FP32", "shape": list(matrix.shape)}
    as_json = pipeline.post(
        f"/v2/models/{MODEL}/infer", json={"inputs": [{**tensor, "data": matrix.ravel().tolist()}]}
    )
    np.testing.assert_allclose(as_json.json()["outputs"][0]["data"], wanted, atol=1e-6)
    header = json.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": matrix.nbytes}}]}
    ).encode()
    as_binary = pipeline.post(
        f"/v2/models/{MODEL}/infer",
        content=header + matrix.tobytes(),
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    np.testing.assert_allclose(as_binary.json()["outputs"][0]["data"], wanted, atol=1e-6)
    v1 = pipeline.post(f"/v1/models/{MODEL}:predict", json={"instances": matrix.tolist()})
    np.testing.assert_allclose(
        [p["fraud_probability"] for p in v1.json()["predictions"]], wanted, atol=1e-6
    )


def test_protocol_refusals_carry_their_status(pipeline, transactions):
    cases = [
        ("/v2/models/nope/infer", {"inputs": [{"name": "features"}]}, 400),
        (f"/v2/models/{MODEL}/versions/v0/infer", {"inputs": []}, 400),
        ("/v1/models/nope:predict", {"instances": [[1.0]]}, 404),
        (f"/v1/models/{MODEL}:predict", {"instances": [[1.0]]}, 400),
        (f"/v1/models/{MODEL}:predict", {"rows": []}, 400),
    ]
    for path, body, status in cases:
        response = pipeline.post(path, json=body)
        assert response.status_code == status, (path, response.text)
        assert response.headers["x-request-id"] and "error" in response.json()
    unknown_model = pipeline.get("/v2/models/nope")
    assert unknown_model.status_code == 404 and "nope" in unknown_model.json()["error"]
    plain_text = pipeline.post("/predict", content=b"x", headers={"Content-Type": "text/plain"})
    assert plain_text.status_code == 415


def test_the_typed_endpoints_answer_through_the_same_pipeline(pipeline, transactions):
    explained = pipeline.post("/explain", json={"transactions": _rows(transactions, 2), "top_k": 2})
    assert explained.status_code == 200
    assert [len(e["contributions"]) for e in explained.json()["explanations"]] == [2, 2]
    health = pipeline.get("/health").json()
    assert health["grpc"] == "serving" and health["status"] == "healthy"
    document = pipeline.get("/docs.json").json()
    assert document["info"]["title"] == "fraud-bento"


def test_every_documented_route_is_in_the_route_table(pipeline):
    """One table declares the routes: what BentoML documents (the typed endpoints and the
    mounted routes) is what the table holds, scoring routes with their handlers."""
    documented = set(pipeline.get("/docs.json").json()["paths"])
    declared = {route.path for route in routes.ROUTES}
    assert documented - declared == set()
    assert {r.path for r in routes.SCORING_ROUTES} <= documented


def test_grpc_infer_and_its_refusals_on_a_real_channel(pipeline, transactions):
    config = pipeline.get(f"/v2/models/{MODEL}/config").json()
    order = config["parameters"]["feature_order"]["string_value"].split(",")
    matrix = np.array([[row[n] for n in order] for row in _rows(transactions)], np.float32)
    expected = pipeline.post("/predict", json={"transactions": _rows(transactions)}).json()
    with grpc.insecure_channel(f"127.0.0.1:{pipeline.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name=MODEL, id="g-1")
        request.inputs.add(name="features", datatype="FP32", shape=list(matrix.shape))
        request.raw_input_contents.append(matrix.tobytes())
        answer = stub.ModelInfer(request, timeout=10)
        scores = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32)
        np.testing.assert_allclose(
            scores, [p["fraud_probability"] for p in expected["predictions"]], atol=1e-6
        )
        assert answer.id == "g-1"
        bad = pb.ModelInferRequest(model_name=MODEL)
        bad.inputs.add(name="features", datatype="FP32", shape=[1, len(order)])
        bad.raw_input_contents.append(np.full((1, len(order)), -1, np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(bad, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "must be >= 0" in refused.value.details()
        with pytest.raises(grpc.RpcError) as unknown:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
