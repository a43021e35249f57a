"""A typed layer over the BentoML model store for `fraud_rf`: save, verify, load, pin."""

from model_store.errors import (
    ModelIntegrityError,
    ModelNotFoundError,
    ModelStoreError,
    PromotionError,
    UntrustedArtifactError,
)
from model_store.pinning import current, decline, history, promote, promotion_of, rollback
from model_store.store import (
    LoadedForest,
    StoredModel,
    engine_names,
    feature_hash,
    get,
    list_models,
    load,
    load_forest,
    load_reference_profile,
    read_estimator,
    save_model,
    verify,
)

__all__ = [
    "ModelIntegrityError",
    "ModelNotFoundError",
    "ModelStoreError",
    "PromotionError",
    "UntrustedArtifactError",
    "StoredModel",
    "current",
    "decline",
    "feature_hash",
    "get",
    "history",
    "list_models",
    "load",
    "read_estimator",
    "LoadedForest",
    "engine_names",
    "load_forest",
    "load_reference_profile",
    "promote",
    "promotion_of",
    "rollback",
    "save_model",
    "verify",
]
