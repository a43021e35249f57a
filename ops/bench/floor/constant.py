"""BentoML's floor: a service whose typed /predict parses the body and returns a constant, with
no model. FLOOR_LEAN=1 turns off what the product turns off for its scoring routes: the access
log line, BentoML's traffic metrics and the OpenTelemetry span per request.

    bentoml serve constant:Constant --working-dir ops/bench/floor --port 3400
"""

from __future__ import annotations

import os

import bentoml

LEAN = os.environ.get("FLOOR_LEAN") == "1"
CONFIG = (
    {
        "logging": {"access": {"enabled": False}},
        "metrics": {"enabled": False},
        "tracing": {"excluded_urls": ["/predict"]},
    }
    if LEAN
    else {}
)
ANSWER = {
    "request_id": "r",
    "model_tag": "fraud_rf:constant",
    "predictions": [{"fraud_probability": 0.001, "is_fraud": False, "threshold": 0.35}],
}


@bentoml.service(name="constant", **CONFIG)
class Constant:
    @bentoml.api
    def predict(self, transactions: list[dict]) -> dict:
        return ANSWER
