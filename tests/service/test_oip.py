"""The Open Inference Protocol over HTTP (httpx) and over HTTP and gRPC with tritonclient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
CLIENT_SCRIPT = Path(__file__).with_name("oip_clients.py")


def _matrix(transactions: list[dict], order: list[str]) -> np.ndarray:
    return np.array([[row[name] for name in order] for row in transactions], dtype=np.float32)


@pytest.fixture(scope="module")
def order(server) -> list[str]:
    metadata = httpx.get(f"{server.url}/v2/models/fraud_rf").json()
    return metadata["inputs"][0]["parameters"]["feature_order"].split(",")


def _infer(server, body: dict, path: str = "/v2/models/fraud_rf/infer") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body)


def _tensor(matrix: np.ndarray, **change) -> dict:
    tensor = {
        "name": "features",
        "shape": list(matrix.shape),
        "datatype": "FP32",
        "data": matrix.ravel().tolist(),
    }
    return {**tensor, **change}


def test_server_and_model_metadata(server, served_tag, order):
    version = served_tag.split(":")[1]
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v2").json()["name"] == "fraud-bento"
    metadata = httpx.get(f"{server.url}/v2/models/fraud_rf/versions/{version}").json()
    assert metadata["versions"] == [version]
    assert metadata["inputs"][0]["shape"] == [-1, len(order)]
    assert {o["name"] for o in metadata["outputs"]} == {"probability", "is_fraud"}
    assert httpx.get(f"{server.url}/v2/models/fraud_rf/ready").json()["ready"] is True
    missing = httpx.get(f"{server.url}/v2/models/fraud_rf/versions/nope/ready")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/other").status_code == 404


def test_http_infer_matches_offline(server, served_tag, transactions, order, offline_probabilities):
    matrix = _matrix(transactions[:20], order)
    version = served_tag.split(":")[1]
    for path in ("/v2/models/fraud_rf/infer", f"/v2/models/fraud_rf/versions/{version}/infer"):
        response = _infer(server, {"id": "r1", "inputs": [_tensor(matrix)]}, path)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "r1" and body["model_version"] == version
        outputs = {output["name"]: output for output in body["outputs"]}
        assert outputs["probability"]["datatype"] == "FP32"
        assert outputs["probability"]["shape"] == [20]
        np.testing.assert_array_equal(
            np.float32(outputs["probability"]["data"]), offline_probabilities[:20]
        )
        assert outputs["is_fraud"]["datatype"] == "BOOL"
    selected = _infer(server, {"inputs": [_tensor(matrix)], "outputs": [{"name": "is_fraud"}]})
    assert [output["name"] for output in selected.json()["outputs"]] == ["is_fraud"]
    nested = _infer(server, {"inputs": [_tensor(matrix, data=matrix.tolist())]})
    assert nested.status_code == 200


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"datatype": "BYTES"}, "datatype BYTES"),
        ({"name": "pixels"}, "unknown input 'pixels'"),
        ({"shape": [20, 5]}, "needs 100 values"),
        ({"shape": [360]}, "shape must be [N, n_features]"),
        ({"data": ["a"] * 360}, "data must be numbers"),
    ],
)
def test_http_infer_errors_use_the_protocol_error_body(
    server, transactions, order, change, message
):
    matrix = _matrix(transactions[:20], order)
    response = _infer(server, {"inputs": [_tensor(matrix, **change)]})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_http_infer_refuses_bad_values_naming_row_and_field(server, transactions, order):
    matrix = _matrix(transactions[:3], order)
    matrix[2, order.index("terminal_risk_7d")] = 3.0
    response = _infer(server, {"inputs": [_tensor(matrix)]})
    assert response.status_code == 400
    assert "row 2, field 'terminal_risk_7d': must be <= 1.0" in response.json()["error"]
    unknown_output = _infer(
        server, {"inputs": [_tensor(matrix[:2])], "outputs": [{"name": "logits"}]}
    )
    assert unknown_output.status_code == 400 and "logits" in unknown_output.json()["error"]
    assert _infer(server, {"inputs": []}).status_code == 400


def test_tritonclient_http_and_grpc(server, transactions, tmp_path, offline_probabilities, order):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(transactions[:25]))
    result = subprocess.run(
        [
            sys.executable,
            str(CLIENT_SCRIPT),
            f"127.0.0.1:{server.http_port}",
            f"127.0.0.1:{server.grpc_port}",
            str(rows),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    http, grpc = report["http"], report["grpc"]
    predict = httpx.post(f"{server.url}/predict", json={"transactions": transactions[:25]})
    from_predict = np.float32([p["fraud_probability"] for p in predict.json()["predictions"]])
    for via in (http["probability"], grpc["probability"], grpc["typed_contents"]):
        np.testing.assert_array_equal(np.float32(via), from_predict)
    np.testing.assert_array_equal(from_predict, offline_probabilities[:25])
    decisions = [p["is_fraud"] for p in predict.json()["predictions"]]
    assert http["is_fraud"] == decisions and grpc["is_fraud"] == decisions
    assert http["live"] and http["ready"] and grpc["live"] and grpc["ready"]
    assert grpc["selected_outputs"] == ["probability"]
    # tritonclient's defaults: binary input, binary outputs (the binary data extension)
    assert "binary_tensor_data" in http["extensions"]
    assert http["binary_outputs"] == [4 * 25, 25]  # float32 probabilities, one byte per BOOL
    np.testing.assert_array_equal(np.float32(http["binary_probability"]), from_predict)
    assert http["binary_is_fraud"] == decisions
    # a gRPC client reads the feature order from the model configuration
    assert grpc["feature_order"] == ",".join(order)

    errors = grpc["errors"]
    assert errors["out_of_range"].startswith("StatusCode.INVALID_ARGUMENT")
    assert "field 'tx_amount': must be >= 0.0" in errors["out_of_range"]
    assert errors["int_datatype"].startswith("StatusCode.INVALID_ARGUMENT")
    assert "INT32" in errors["int_datatype"]
    assert "expected [N, 18]" in errors["wrong_width"]
    for case in ("shape_mismatch", "raw_short", "raw_ragged", "huge_shape"):
        assert errors[case].startswith("StatusCode.INVALID_ARGUMENT"), (case, errors[case])
    assert errors["unknown_model"].startswith("StatusCode.NOT_FOUND")
    assert grpc["live_after"]


def _binary(header: dict, tail: bytes, length: int | None = None) -> tuple[bytes, dict]:
    encoded = json.dumps(header).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(encoded) if length is None else length),
    }
    return encoded + tail, headers


def test_http_binary_data_extension(server, transactions, order, offline_probabilities):
    matrix = _matrix(transactions[:10], order)
    raw = matrix.tobytes()
    tensor = {"name": "features", "shape": list(matrix.shape), "datatype": "FP32"}
    url = f"{server.url}/v2/models/fraud_rf/infer"
    body, headers = _binary(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "probability", "parameters": {"binary_data": True}}],
        },
        raw,
    )
    response = httpx.post(url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 40
    assert "data" not in header["outputs"][0]
    probabilities = np.frombuffer(response.content[length:], dtype="<f4")
    np.testing.assert_array_equal(probabilities, offline_probabilities[:10])

    sized = {**tensor, "parameters": {"binary_data_size": len(raw)}}
    cases = [
        (_binary({"inputs": [sized]}, raw[:-4]), "runs past"),
        (_binary({"inputs": [sized]}, raw + b"\0" * 4), "4 bytes of binary data follow"),
        (_binary({"inputs": [sized]}, raw, length=10**6), "Inference-Header-Content-Length"),
        (_binary({"inputs": [tensor]}, raw), "has no data nor binary_data_size"),
    ]
    for (bad_body, bad_headers), message in cases:
        refused = httpx.post(url, content=bad_body, headers=bad_headers)
        assert refused.status_code == 400 and message in refused.json()["error"], refused.text
    not_oip = httpx.post(
        f"{server.url}/predict", content=body, headers=headers
    )  # octet-stream is for OIP infer only
    assert not_oip.status_code == 415 and "application/json" in not_oip.json()["error"]


def test_kserve_v1_predicts_lists_and_rows_like_predict(server, transactions):
    rows = transactions[:3]
    expected = httpx.post(f"{server.url}/predict", json={"transactions": rows}).json()
    names = [name for name in rows[0] if name != "transaction_id"]
    as_lists = httpx.post(
        f"{server.url}/v1/models/fraud_rf:predict",
        json={"instances": [[row[name] for name in names] for row in rows]},
    )
    as_rows = httpx.post(f"{server.url}/v1/models/fraud_rf:predict", json={"instances": rows})
    for response in (as_lists, as_rows):
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["fraud_probability"] for p in predictions] == pytest.approx(
            [p["fraud_probability"] for p in expected["predictions"]], abs=1e-6
        )
        assert [p["is_fraud"] for p in predictions] == [
            p["is_fraud"] for p in expected["predictions"]
        ]
    assert [p["transaction_id"] for p in as_rows.json()["predictions"]] == [
        row["transaction_id"] for row in rows
    ]
    ready = httpx.get(f"{server.url}/v1/models/fraud_rf")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_kserve_v1_refusals_name_the_instance(server, transactions):
    row = transactions[0]
    names = [name for name in row if name != "transaction_id"]
    values = [row[name] for name in names]
    url = f"{server.url}/v1/models/fraud_rf:predict"
    unknown = httpx.post(f"{server.url}/v1/models/nope:predict", json={"instances": [values]})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    short = httpx.post(url, json={"instances": [values, values[:-1]]})
    assert short.status_code == 400
    assert [d["loc"] for d in short.json()["detail"]] == [["instances", 1]]
    negative = httpx.post(url, json={"instances": [[-1.0, *values[1:]]]})
    assert negative.status_code == 400
    assert negative.json()["detail"][0]["loc"] == ["instances", 0, names[0]]
    bad_row = httpx.post(url, json={"instances": [{**row, "tx_amount": "12"}]})
    assert bad_row.status_code == 400
    assert bad_row.json()["detail"][0]["loc"] == ["instances", 0, "tx_amount"]
    empty = httpx.post(url, json={"instances": []})
    assert empty.status_code == 400 and "instances" in empty.json()["error"]
