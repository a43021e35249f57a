"""Batch scoring of a large feature table on Spark with a registered model: each executor's
Python worker loads the model once from the BentoML model store (hash-verified, the stored
engine the service runs, ONNX by default) and scores Arrow batches, so a table's scores equal
the service's for the same rows.

BentoML's Spark integration (`bentoml.batch.run_in_spark`, read in BentoML 1.4.40) does not
serve here: it starts a Bento server per partition and converts batches with the IO descriptors
of BentoML's earlier API style (`input.from_arrow`), which this bundle's `@bentoml.service`
endpoints do not have. Scoring calls the model store directly instead, with the same engine
and threshold as the service.

    features = spark.read.parquet("s3a://bucket/features/")  # spark_payment_features' output
    spark_scores(features, "fraud_rf:abc123", id_column="transaction_id").write.parquet(...)

The executors must reach the model store: a shared `BENTOML_HOME`, or the model imported on each
(`bentoml models export` / `import`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

import model_store

SCORE_COLUMNS = "fraud_probability float, is_fraud boolean"


def _scorer(tag: str):
    """The model's probability function and threshold, as the service loads them."""
    stored = model_store.get(tag)
    return model_store.load_forest(stored).forest.predict_proba, stored


def spark_scores(features, tag: str, id_column: str):
    """A Spark DataFrame of each row's `id_column`, fraud probability (float32, as the service
    answers it) and decision at the model's threshold, from a DataFrame holding the model's
    features by name."""
    id_type = features.schema[id_column].dataType.simpleString()

    def score(batches: Iterator) -> Iterator:
        import pandas as pd

        probability, stored = _scorer(tag)
        names = stored.schema.names
        for batch in batches:
            matrix = batch[names].to_numpy(dtype=np.float32)
            scores = np.asarray(probability(matrix), dtype=np.float32)
            yield pd.DataFrame(
                {
                    id_column: batch[id_column],
                    "fraud_probability": scores,
                    "is_fraud": scores >= stored.threshold,
                }
            )

    quoted = id_column.replace("`", "``")
    return features.mapInPandas(score, f"`{quoted}` {id_type}, {SCORE_COLUMNS}")
