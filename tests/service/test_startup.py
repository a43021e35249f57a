"""Start-up refuses what it must not serve, with a clear message and a non-zero exit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

import model_store
from model_store.store import ARTIFACT_FILE
from settings import ColumnsConfig
from tests.service.conftest import start_server, stop_server
from training.features import feature_schema

pytestmark = pytest.mark.slow
SHORT_KEY = "tiny-key-x"  # pragma: allowlist secret


def _tampered_model() -> str:
    features = [feature.as_dict() for feature in feature_schema(ColumnsConfig())]
    X = np.random.default_rng(0).uniform(size=(100, len(features))).astype(np.float32)
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, X[:, 0] > 0.5)
    stored = model_store.save_model(
        model, features=features, threshold=0.5, gate_passed=True, metadata={}
    )
    artifact = stored.path / ARTIFACT_FILE
    payload = bytearray(artifact.read_bytes())
    payload[-10] ^= 0x01
    artifact.write_bytes(bytes(payload))
    return stored.tag


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAUD_MODEL_TAG": "tampered"}, "failed its integrity check"),
        ({"FRAUD_STORE__PIN_FILE": "/nonexistent/model.lock"}, "no model to serve"),
        ({"FRAUD_MODEL_TAG": "fraud_rf:latest"}, "names no exact version"),
        ({"FRAUD_MODEL_TAG": "fraud_rf:notinthestore1"}, "is not in the model store"),
    ],
)
def test_refuses_to_start(tmp_path, env, message):
    if env.get("FRAUD_MODEL_TAG") == "tampered":
        env = {"FRAUD_MODEL_TAG": _tampered_model()}
    code, output = _start_refused(env, tmp_path)
    assert code != 0
    assert message in output


def _start_refused(env: dict[str, str], folder) -> tuple[int, str]:
    server = start_server(".", folder / "serve.log", env=env, timeout=60)
    try:
        code = server.process.wait(60)
    finally:
        stop_server(server)
    return code, server.output()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAUD_SECURITY__API_KEYS_FILE": "/nonexistent/api-keys"}, "cannot read API keys file"),
        ({"FRAUD_API_KEYS": SHORT_KEY}, "shorter than 16 characters"),
        ({"FRAUD_SERVING__WORKERS": "2"}, "set FRAUD_SERVING__WORKERS=1, or FRAUD_PAYMENTS__STORE"),
    ],
)
def test_refuses_to_start_with_a_broken_configuration(served_tag, tmp_path, env, message):
    code, output = _start_refused(env, tmp_path)
    assert code != 0
    assert message in output
    assert SHORT_KEY not in output  # a key is never echoed
