"""Design B: one service whose batchable API receives the HTTP requests directly."""

from __future__ import annotations

import bentoml
from common import FEATURE_NAMES, MAX_BATCH_SIZE, MAX_LATENCY_MS, MODEL_TAG, Transaction

from serving.contract import schema
from serving.scoring.runtime import FraudModel


@bentoml.service(name="batchable_api")
class BatchableAPI:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.runtime = FraudModel.load(MODEL_TAG)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, transactions: list[Transaction]) -> list[float]:
        return self.runtime.predict_proba(schema.to_matrix(transactions, FEATURE_NAMES)).tolist()
