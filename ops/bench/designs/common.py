"""What the alternative designs share with the product: the pinned model and its row type."""

from __future__ import annotations

from pathlib import Path

import model_store
from serving.contract import rules
from serving.scoring.runtime import pinned_tag
from settings import load_settings

MODEL_TAG = pinned_tag(load_settings(), Path(__file__))
FEATURES = model_store.get(MODEL_TAG).schema
FEATURE_NAMES = FEATURES.names
Transaction = rules.transaction_model(FEATURES, on_invalid=lambda fields: None)
MAX_BATCH_SIZE, MAX_LATENCY_MS = 256, 100
