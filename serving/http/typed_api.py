"""The request types of the typed @bentoml.api endpoints (service.py), built from the model's own
feature schema and the settings' limits: BentoML documents them in the API document, its
generated clients send them, and it validates them when the lean path is off. A refused row is
counted here, as BentoML answers it itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from model_store.contract import FeatureSchema
from serving.contract import rules, schema
from serving.http import routes
from serving.payments.payment_requests import PaymentValue, payment_model
from serving.telemetry import traffic
from settings import ColumnsConfig, Settings


def _counted(path: str):
    """The row model's hook: a refused row counted under its route's protocol."""
    protocol = routes.find(path)[0].protocol
    return lambda fields: traffic.record_refusal(protocol, "invalid", fields)


@dataclass(frozen=True)
class RequestTypes:
    transaction: Any
    predict: Any
    explain: Any
    feedback: Any
    top_k: Any
    score: Any
    score_columns: Any

    @classmethod
    def of(
        cls, settings: Settings, features: FeatureSchema, payment_columns: ColumnsConfig | None
    ) -> RequestTypes:
        transaction = rules.transaction_model(features, on_invalid=_counted("/predict"))
        payment = (
            payment_model(payment_columns, features, on_invalid=_counted("/score"))
            if payment_columns is not None
            else dict[str, Any]  # any body: /score answers 409, it does not apply to this model
        )
        payment_rows = rules.rows_bounds(settings.payments.max_rows_per_request)
        return cls(
            transaction=transaction,
            predict=Annotated[
                list[transaction],
                Field(**rules.rows_bounds(settings.serving.max_rows_per_request)),
            ],
            explain=Annotated[
                list[transaction], Field(**rules.rows_bounds(settings.serving.explain_max_rows))
            ],
            feedback=Annotated[
                list[schema.FeedbackLabel],
                Field(min_length=1, max_length=settings.monitoring.max_feedback_labels),
            ],
            top_k=Annotated[int, Field(ge=1, le=len(features.names))],
            score=Annotated[list[payment], Field(**payment_rows)],
            score_columns=Annotated[list[list[PaymentValue]], Field(**payment_rows)],
        )
