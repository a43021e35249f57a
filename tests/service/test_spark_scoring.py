"""Batch scoring on Spark (local mode) with the served model: the same probabilities and
decisions as the service answers for the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.spark_scoring import spark_scores

pytestmark = pytest.mark.slow


def test_spark_scores_equal_the_services(spark, pipeline, served_tag, transactions):
    rows = transactions[:200]
    answered = pipeline.post("/predict", json={"transactions": rows})
    assert answered.status_code == 200, answered.text
    service = {p["transaction_id"]: p for p in answered.json()["predictions"]}
    table = spark.createDataFrame(pd.DataFrame(rows))
    scored = spark_scores(table, served_tag, "transaction_id").toPandas()
    assert sorted(scored["transaction_id"]) == sorted(service)
    expected = [service[tx]["fraud_probability"] for tx in scored["transaction_id"]]
    np.testing.assert_array_equal(scored["fraud_probability"], np.float32(expected))
    assert scored["is_fraud"].tolist() == [
        service[tx]["is_fraud"] for tx in scored["transaction_id"]
    ]
