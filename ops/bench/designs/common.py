"""What the alternative designs share with the product: the pinned model and its row type."""

from __future__ import annotations

from pathlib import Path

import model_store
from serving import schema
from serving.runtime import feature_specs, pinned_tag
from settings import load_settings

MODEL_TAG = pinned_tag(load_settings(), Path(__file__))
FEATURES = feature_specs(model_store.get(MODEL_TAG))
FEATURE_NAMES = [feature.name for feature in FEATURES]
Transaction = schema.transaction_model(FEATURES, on_invalid=lambda fields: None)
MAX_BATCH_SIZE, MAX_LATENCY_MS = 256, 100
