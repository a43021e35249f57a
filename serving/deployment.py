"""What a service serves, settled once in the process that imports service.py, before any worker
starts: the pinned model (and challenger), verified; the security keys; whether /score applies.
Every mistake here stops the start with the setting to change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import model_store
from model_store.contract import FeatureSchema
from serving.http.security import Guard
from serving.payments.payment_requests import payment_columns
from serving.scoring.runtime import challenger_tag, pinned_tag
from settings import ColumnsConfig, Settings


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    model_tag: str
    stored: model_store.StoredModel
    challenger_tag: str | None
    guard: Guard
    model_payment_columns: ColumnsConfig | None  # the model's, whether /score is on or off
    payment_columns: ColumnsConfig | None  # /score's: None when it is off or does not apply

    @property
    def features(self) -> FeatureSchema:
        return self.stored.schema

    @classmethod
    def of(cls, settings: Settings, service_file: Path) -> Deployment:
        tag = pinned_tag(settings, service_file)
        stored = model_store.get(tag)
        model_store.verify(stored)  # refuse a tampered model before any worker starts
        challenger = challenger_tag(settings, service_file)
        if challenger is not None:
            _check_challenger(stored, challenger)
        columns = payment_columns(stored)
        served = columns if settings.payments.store != "off" else None
        if (
            served is not None
            and settings.payments.store == "embedded"
            and settings.serving.workers > 1
        ):
            raise ValueError(
                f"serving.workers is {settings.serving.workers}, but the embedded payment state "
                "(payments.store = 'embedded') has one owner: set FRAUD_SERVING__WORKERS=1, or "
                "FRAUD_PAYMENTS__STORE=redis to share it, or =off to serve without /score"
            )
        guard = Guard.from_config(settings.security)  # bad key configuration stops start-up
        return cls(settings, tag, stored, challenger, guard, columns, served)


def _check_challenger(champion: model_store.StoredModel, tag: str) -> None:
    stored = model_store.get(tag)
    model_store.verify(stored)
    if stored.tag == champion.tag:
        raise ValueError(f"the challenger {tag} is the champion: unpin one of them")
    if stored.labels.get("feature_hash") != champion.labels.get("feature_hash"):
        raise ValueError(
            f"the challenger {tag} takes other features than the champion "
            f"{champion.tag}: both must score the same requests"
        )
