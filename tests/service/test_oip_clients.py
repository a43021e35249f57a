"""Standard OIP clients with their defaults, in their own venv (KServe's SDK and MLServer each
register the `inference` protos, so they never share a process with each other or with us):
KServe's REST and gRPC clients send binary tensors; MLServer's PandasCodec sends one input per
feature column and decodes the response."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest

from ops.tool_venvs import tool_python
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def client_python() -> Path:
    """KServe's SDK and MLServer at the releases requirements/oip-clients.txt pins."""
    return tool_python("oip-clients", REPO_ROOT / ".venv" / "oip-clients")


def _run(python: Path, script: str, *args: str) -> dict:
    result = subprocess.run(
        [str(python), str(HERE / script), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_kserve_sdk_rest_and_grpc_with_their_defaults(
    client_python, server, transactions, offline_probabilities, tmp_path
):
    order = httpx.get(f"{server.url}/v2/models/fraud_rf/config").json()["parameters"]
    names = order["feature_order"]["string_value"].split(",")
    rows = tmp_path / "matrix.json"
    rows.write_text(json.dumps([[row[name] for name in names] for row in transactions[:30]]))
    report = _run(
        client_python,
        "kserve_clients.py",
        server.url,
        f"127.0.0.1:{server.grpc_port}",
        str(rows),
    )
    assert report["rest"]["binary_request"]  # the SDK's default: JSON header + binary tensor
    for via in ("rest", "grpc"):
        np.testing.assert_array_equal(
            np.float32(report[via]["probability"]), offline_probabilities[:30]
        )
        assert report[via]["id"] == "kserve-1"
        assert len(report[via]["is_fraud"]) == 30
    assert report["v1"]["protocol"] == "v1"
    np.testing.assert_array_equal(
        np.float32(report["v1"]["probability"]), offline_probabilities[:30]
    )
    assert report["v1"]["is_fraud"] == report["rest"]["is_fraud"]


def test_mlserver_pandas_codec_one_input_per_feature(
    client_python, server, transactions, offline_probabilities, tmp_path
):
    rows = tmp_path / "rows.json"
    features = [{k: v for k, v in row.items() if k != "transaction_id"} for row in transactions]
    rows.write_text(json.dumps(features[:30]))
    report = _run(client_python, "mlserver_codecs.py", server.url, str(rows))
    inputs = {name: (datatype, shape) for name, datatype, shape in report["inputs"]}
    assert inputs["tx_amount"] == ("FP64", [30, 1])
    assert inputs["customer_nb_tx_1d"] == ("INT64", [30, 1])
    assert report["columns"] == ["probability", "is_fraud"]
    np.testing.assert_array_equal(np.float32(report["probability"]), offline_probabilities[:30])
