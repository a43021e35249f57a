"""The seed design, kept only as the benchmark's baseline: FastAPI + uvicorn, one scikit-learn
predict_proba per request, no batching. Not part of the product.

    FRAUD_MODEL_TAG=fraud_rf:... uvicorn seed_app:app --app-dir ops/bench --port 3400
"""

from __future__ import annotations

import os

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

import model_store

STORED, ESTIMATOR = model_store.load(os.environ["FRAUD_MODEL_TAG"])
NAMES = [feature["name"] for feature in STORED.features]
ESTIMATOR.n_jobs = 1

app = FastAPI()


class PredictRequest(BaseModel):
    transactions: list[dict[str, float | int | str | None]]


@app.post("/predict")
def predict(request: PredictRequest) -> dict:
    matrix = np.array([[row[name] for name in NAMES] for row in request.transactions], np.float32)
    probabilities = ESTIMATOR.predict_proba(matrix)[:, 1]
    return {"predictions": [{"fraud_probability": float(p)} for p in probabilities]}


@app.get("/ready")
def ready() -> dict:
    return {"ready": True}
