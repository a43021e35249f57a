"""A small stored forest of the default features, for in-process tests of the serving path."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier

import model_store
from serving.scoring.runtime import FraudModel
from settings import ColumnsConfig
from training.features import feature_schema

FEATURES = [feature.as_dict() for feature in feature_schema(ColumnsConfig())]


def small_model(seed: int = 0, threshold: float = 0.5) -> FraudModel:
    """Five shallow trees fitted on uniform rows, saved to the store and loaded as served."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, size=(300, len(FEATURES))).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=seed)
    forest.fit(X, (X[:, seed % 3] > 0.7).astype(int))
    stored = model_store.save_model(
        forest, features=FEATURES, threshold=threshold, gate_passed=True, metadata={}
    )
    return FraudModel.load(stored.tag)
