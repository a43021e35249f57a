"""Design C: a gateway service calling a separate batchable runner through bentoml.depends."""

from __future__ import annotations

import bentoml
import numpy as np
from common import FEATURE_NAMES, MAX_BATCH_SIZE, MAX_LATENCY_MS, MODEL_TAG, Transaction

from serving.contract import schema
from serving.scoring.runtime import FraudModel


@bentoml.service(name="runner")
class Runner:
    model = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        self.runtime = FraudModel.load(MODEL_TAG)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def score(self, matrix: np.ndarray) -> np.ndarray:
        return self.runtime.predict_proba(matrix)


@bentoml.service(name="gateway")
class Gateway:
    runner = bentoml.depends(Runner)

    @bentoml.api
    async def predict(self, transactions: list[Transaction]) -> list[float]:
        matrix = schema.to_matrix(transactions, FEATURE_NAMES)
        return (await self.runner.to_async.score(matrix)).tolist()
