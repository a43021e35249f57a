"""HTTP response types and the /feedback request (the scoring requests:
serving/contract/rules.py)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.contract.rules import TRANSACTION_ID_MAX_LENGTH


def to_matrix(transactions: list[BaseModel], names: list[str]) -> np.ndarray:
    return np.array(
        [[getattr(row, name) for name in names] for row in transactions], dtype=np.float32
    )


class Prediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    transaction_id: str | None = None
    fraud_probability: float = Field(description="Probability of fraud, 0..1.")
    is_fraud: bool = Field(description="fraud_probability >= threshold.")
    threshold: float
    model_tag: str
    request_id: str
    features: dict[str, float | int] | None = Field(
        None,
        description="The features the model scored (from /score and /score_columns with "
        "include_features; absent otherwise).",
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model_tag: str
    predictions: list[Prediction]


class Contribution(BaseModel):
    feature: str
    value: float = Field(description="The feature's value in the request.")
    shap: float = Field(description="Signed contribution to the fraud probability.")


class Explanation(BaseModel):
    transaction_id: str | None = None
    fraud_probability: float
    base_value: float = Field(description="Expected fraud probability over the training data.")
    contributions: list[Contribution] = Field(description="Top features by |shap|, largest first.")


class ExplainResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model_tag: str
    explanations: list[Explanation]


class FeedbackLabel(BaseModel):
    """The true outcome of an earlier prediction, named by its transaction id or request id."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: str | None = Field(None, min_length=1, max_length=TRANSACTION_ID_MAX_LENGTH)
    request_id: str | None = Field(
        None, min_length=1, max_length=64, description="For requests that scored one transaction."
    )
    is_fraud: bool = Field(strict=True, description="The confirmed label.")
    label_time: datetime | None = Field(None, description="When the label was established.")

    @model_validator(mode="after")
    def one_id(self) -> FeedbackLabel:
        if (self.transaction_id is None) == (self.request_id is None):
            raise ValueError("give exactly one of transaction_id and request_id")
        return self


class RealizedFigures(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_tag: str
    window_days: float
    labelled: int = Field(description="Labelled predictions of the served model in the window.")
    frauds: int
    precision: float | None = Field(description="Of the decisions; null while undefined.")
    recall: float | None
    pr_auc: float | None = Field(description="Average precision of the scores.")


class FeedbackResponse(BaseModel):
    received: int
    matched: int = Field(description="Labels that found their prediction.")
    unknown: list[str] = Field(description="Ids with no logged prediction (none was changed).")
    ambiguous: list[str] = Field(description="Request ids that scored several transactions.")
    realized: RealizedFigures
