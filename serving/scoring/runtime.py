"""The model runtime: load a pinned, hash-verified model and score feature matrices."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import model_store
from model_store import LoadedForest, StoredModel
from model_store.contract import FeatureSchema
from model_store.engines import SklearnForest
from settings import MODEL_NAME, Settings

logger = logging.getLogger("fraud_bento.runtime")


class NoModelPinned(RuntimeError):
    pass


def _bento_model_tags(service_file: Path) -> list[str] | None:
    """The fraud models a built Bento carries, from its bento.yaml (None outside a built Bento):
    the champion, then the challenger if it has one (BentoML lists a service's models in the
    order of their attribute names: `model`, then `model_challenger`)."""
    source = service_file.resolve().parent
    manifest = source.parent / "bento.yaml"
    if source.name != "src" or not manifest.is_file():
        return None
    bento = yaml.safe_load(manifest.read_text())
    return [
        model["tag"]
        for service in bento.get("services", [])
        for model in service.get("models", [])
        if model["tag"].split(":")[0] == MODEL_NAME
    ]


def _bento_model_tag(service_file: Path) -> str | None:
    tags = _bento_model_tags(service_file)
    return tags[0] if tags else None


def challenger_tag(settings: Settings, service_file: Path) -> str | None:
    """The challenger to serve: FRAUD_CHALLENGER_TAG for one run (empty: none); in a built
    Bento, the one it carries; else the challenger pin."""
    if settings.challenger_tag is not None:
        return settings.challenger_tag or None
    carried = _bento_model_tags(service_file)
    if carried is not None:
        return carried[1] if len(carried) > 1 else None
    return model_store.current(Path(settings.store.challenger_pin_file))


def pinned_tag(settings: Settings, service_file: Path) -> str:
    """The tag to serve: FRAUD_MODEL_TAG for one run; in a built Bento, the model it carries
    (so re-pinning never changes a built Bento); else the promoted pin."""
    tag = (
        settings.model_tag
        or _bento_model_tag(service_file)
        or model_store.current(Path(settings.store.pin_file))
    )
    if not tag:
        raise NoModelPinned(
            f"no model to serve: {settings.store.pin_file} is missing. Train and promote one "
            "(`make run`, or `python -m model_store promote TAG`), or set FRAUD_MODEL_TAG."
        )
    return tag


@dataclass
class FraudModel:
    """A loaded `fraud_rf` model: its schema, threshold and the engine that scores.

    Scoring uses the first of the model's engines that loads, in the order they were ranked at
    save time (model_store/engines.py), unless `engine` names one, or "sklearn". The
    scikit-learn forest is read from its artifact only when it scores or when `estimator` is
    first asked for (SHAP explains it): reading it imports scikit-learn and skops, 2 to 2.5
    CPU-s of a worker's start that a compiled engine does without.
    """

    stored: StoredModel
    forest: LoadedForest
    loaded_at: float = field(default_factory=time.time)
    _estimator: Any = field(default=None, init=False, repr=False)
    _reading: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # Read from the stored model once: the scoring path asks for them on every request.
    tag: str = field(init=False)
    name: str = field(init=False)
    version: str = field(init=False)
    threshold: float = field(init=False)
    schema: FeatureSchema = field(init=False)

    def __post_init__(self) -> None:
        self.tag = self.stored.tag
        self.name, self.version = self.tag.split(":", 1)
        self.threshold = self.stored.threshold
        self.schema = self.stored.schema

    @classmethod
    def load(cls, tag: str, engine: str = "auto", intra_op_threads: int = 1) -> FraudModel:
        stored = model_store.get(tag)
        forest = model_store.load_forest(stored, engine, intra_op_threads)
        for name, reason in forest.fallbacks.items():
            logger.warning("%s is served without its %s engine: %s", tag, name, reason)
        return cls(stored, forest)

    @property
    def estimator(self) -> Any:
        """The scikit-learn forest, read (hash and trusted types checked) on first use."""
        with self._reading:
            if self._estimator is None:
                scoring = self.forest.forest  # scikit-learn's own: read once, at load
                self._estimator = (
                    scoring.estimator
                    if isinstance(scoring, SklearnForest)
                    else model_store.read_estimator(self.stored)
                )
            return self._estimator

    @property
    def engine(self) -> str:
        return self.forest.engine

    @property
    def feature_names(self) -> list[str]:
        return self.schema.names

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        """Fraud probabilities (float32) for a validated [N, n_features] matrix."""
        return self.forest.forest.predict_proba(matrix)
