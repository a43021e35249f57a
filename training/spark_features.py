"""The payment features on Apache Spark, for tables that outgrow one machine: the same SQL as
DuckDB's (training/window_sql.py, in Spark's dialect) computes the window aggregates, and the
same formulas (`model_store.payments.features_from`) turn each partition's aggregates into
features, in Arrow batches on the executors.

    spark = SparkSession.builder.remote("sc://host:15002").getOrCreate()  # or spark-submit
    payments = spark.read.parquet("s3a://bucket/payments/")
    spark_payment_features(payments, columns, delay_days=7).write.parquet("s3a://bucket/features/")

The session must compare times in UTC (`spark.sql.session.timeZone=UTC`, as `local_session`
sets): a payment table's times are UTC, as in training.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

from model_store.payments import ENGINEERED_FEATURES, features_from
from settings import ColumnsConfig
from training.window_sql import AGGREGATES, POSITION, SPARK, aggregates_from, aggregates_query

SPARK_TYPES = {"float32": "float", "int8": "tinyint", "int32": "int"}


def local_session(cores: int = 2):
    """A Spark session on this machine (local mode), in UTC."""
    from pyspark.sql import SparkSession

    # The workers' Python is this one (the project and its packages). On a cluster, ship them
    # instead: a packed virtualenv with --archives, PYSPARK_PYTHON pointing into it.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("fraud-bento-features")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(2 * cores))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )


def spark_payment_features(payments, columns: ColumnsConfig, delay_days: int):
    """A Spark DataFrame of each payment's position (its row in `payments`, which must carry a
    `row_position` column) and its engineered features, each in its schema's type."""
    view = "fraud_bento_payments"
    payments.createOrReplaceTempView(view)
    aggregates = payments.sparkSession.sql(aggregates_query(view, columns, delay_days, SPARK))
    schema = ", ".join(
        [f"{POSITION} bigint"]
        + [f"{feature.name} {SPARK_TYPES[feature.dtype]}" for feature in ENGINEERED_FEATURES]
    )

    def features(batches: Iterator) -> Iterator:
        import pandas as pd

        for batch in batches:
            computed = features_from(
                aggregates_from({name: batch[name].to_numpy() for name in AGGREGATES})
            )
            yield pd.DataFrame(
                {POSITION: batch[POSITION].to_numpy()}
                | {
                    feature.name: computed[feature.name].astype(feature.dtype)
                    for feature in ENGINEERED_FEATURES
                }
            )

    return aggregates.mapInPandas(features, schema)
