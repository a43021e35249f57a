"""Saving, verifying and loading `fraud_rf` models in the BentoML model store.

Each model carries what serving needs (ordered feature schema, threshold, metrics) in its
metadata, and two integrity labels: `feature_hash` of the schema and `sha256` of the artifact.

The scikit-learn model is stored with skops, which rebuilds objects from an allow-list of types
instead of running code as a pickle can: loading checks the artifact's hash, then refuses any
type outside `TRUSTED_TYPES` and skops' own defaults (scikit-learn estimators, NumPy arrays).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from bentoml.exceptions import NotFound

import bentoml_internals
from model_store import engines
from model_store.contract import FeatureSchema
from model_store.errors import ModelIntegrityError, ModelNotFoundError, UntrustedArtifactError
from settings import MODEL_NAME

ARTIFACT_FILE = "model.skops"
LEGACY_PICKLE = "model.pkl"
# Beyond skops' defaults, what a fitted RandomForestClassifier holds.
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
REFERENCE_FILE = "reference_profile.bin"


def feature_hash(features: list[dict[str, Any]]) -> str:
    """Hash of the ordered feature names and dtypes: equal hashes mean interchangeable inputs."""
    ordered = [[feature["name"], feature["dtype"]] for feature in features]
    return hashlib.sha256(json.dumps(ordered).encode()).hexdigest()


def _without_none(value: Any) -> Any:
    """BentoML metadata takes no None: leave such entries out."""
    if isinstance(value, dict):
        return {str(k): _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value if v is not None]
    return value


@dataclass(frozen=True)
class StoredModel:
    tag: str
    created: datetime
    labels: dict[str, str]
    metadata: dict[str, Any]
    path: Path

    @property
    def features(self) -> list[dict[str, Any]]:
        return self.metadata["features"]

    @property
    def schema(self) -> FeatureSchema:
        """The model's input contract (model_store/contract.py)."""
        return FeatureSchema.from_metadata(self.features)

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @property
    def gate_passed(self) -> bool:
        return self.labels.get("gate") == "passed"


def save_model(
    model: Any,
    *,
    features: list[dict[str, Any]],
    threshold: float,
    gate_passed: bool,
    metadata: dict[str, Any],
    parity_rows: np.ndarray | None = None,
    reference_profile: bytes | None = None,
) -> StoredModel:
    """Register a fitted model; `metadata` adds to the schema and threshold kept here.

    With `parity_rows` (held-out feature rows), each registered engine's artifact (an ONNX graph,
    a compiled library) is stored beside the forest when it passes its parity gate on those rows;
    every engine's report goes into the metadata either way.
    `reference_profile` (a serialised data profile of the training features) travels with the
    model for drift monitoring; like the artifacts, it is hashed into a label.
    """
    payload = serialize(model)
    if parity_rows is None:
        artifacts: dict[str, bytes] = {}
        parity = {
            name: engines.ParityReport(name, False, "no parity rows given")
            for name in engines.ENGINES
        }
    else:
        artifacts, parity = engines.build_engines(model, parity_rows, threshold)
    labels = {
        "feature_hash": feature_hash(features),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "gate": "passed" if gate_passed else "failed",
        "framework_version": f"scikit-learn-{version('scikit-learn')}",
        "engine": engines.SEPARATOR.join(artifacts) or engines.SKLEARN,
    }
    for name, artifact in artifacts.items():
        labels[engines.artifact_label(engines.ENGINES[name])] = hashlib.sha256(artifact).hexdigest()
    if reference_profile is not None:
        labels["reference_sha256"] = hashlib.sha256(reference_profile).hexdigest()
    full_metadata = _without_none(
        {
            **metadata,
            "features": features,
            "threshold": float(threshold),
            "engine_parity": {name: report.as_metadata() for name, report in parity.items()},
        }
    )
    with bentoml.models.create(
        MODEL_NAME,
        labels=labels,
        metadata=full_metadata,
        module=__name__,
        context=bentoml.models.ModelContext(
            framework_name="sklearn", framework_versions={"scikit-learn": version("scikit-learn")}
        ),
    ) as bento_model:
        (Path(bento_model.path) / ARTIFACT_FILE).write_bytes(payload)
        for name, artifact in artifacts.items():
            (Path(bento_model.path) / engines.ENGINES[name].artifact).write_bytes(artifact)
        if reference_profile is not None:
            (Path(bento_model.path) / REFERENCE_FILE).write_bytes(reference_profile)
    return get(str(bento_model.tag))


def serialize(model: Any) -> bytes:
    import skops.io  # here, not at the top: see load

    return skops.io.dumps(model)


def get(tag: str) -> StoredModel:
    """The stored model with exactly this tag (`name:version`; `latest` is refused)."""
    parsed = bentoml.Tag.from_taglike(tag)
    if parsed.version in (None, "latest"):
        raise ModelNotFoundError(f"'{tag}' names no exact version: give the full tag name:version")
    try:
        bento_model = bentoml.models.get(parsed)
    except NotFound as error:
        home = bentoml_internals.home()
        raise ModelNotFoundError(
            f"model {tag} is not in the model store of {home} (BENTOML_HOME); "
            "`python -m model_store list` shows the tags it holds"
        ) from error
    return StoredModel(
        tag=str(bento_model.tag),
        created=bento_model.creation_time,
        labels=dict(bento_model.info.labels),
        metadata=dict(bento_model.info.metadata),
        path=Path(bento_model.path),
    )


def _verified(stored: StoredModel, file_name: str, label: str) -> bytes:
    """A file's bytes, hashed as read, so what is checked is what gets used."""
    artifact = stored.path / file_name
    payload = artifact.read_bytes() if artifact.is_file() else b""
    actual = hashlib.sha256(payload).hexdigest() if payload else "missing"
    expected = stored.labels.get(label, "unlabelled")
    if actual != expected:
        raise ModelIntegrityError(f"{stored.tag} ({file_name})", expected, actual)
    return payload


def verify(stored: StoredModel) -> str:
    """The artifact's sha256 if it and every other file (an engine's artifact, the reference
    profile) that the model has match their labels."""
    _verified(stored, ARTIFACT_FILE, "sha256")
    others = [(e.artifact, engines.artifact_label(e)) for e in engines.ENGINES.values()]
    for file_name, label in [*others, (REFERENCE_FILE, "reference_sha256")]:
        if label in stored.labels:
            _verified(stored, file_name, label)
    return stored.labels["sha256"]


def load(tag: str) -> tuple[StoredModel, Any]:
    """The stored record and the model, after its hash check, from trusted types only."""
    stored = get(tag)
    return stored, read_estimator(stored)


def read_estimator(stored: StoredModel) -> Any:
    """The stored scikit-learn model, after its hash check, from trusted types only."""
    if (stored.path / LEGACY_PICKLE).is_file() and not (stored.path / ARTIFACT_FILE).is_file():
        raise UntrustedArtifactError(
            f"model {stored.tag} is a pickle (saved before skops artifacts); retrain it"
        )
    payload = _verified(stored, ARTIFACT_FILE, "sha256")
    # skops (and scikit-learn with it) imported where a model is read or written: 2.5 s of the
    # store's import here, which the promotion CLI and `bentoml serve`'s supervisor never need
    import skops.io

    untrusted = [t for t in skops.io.get_untrusted_types(data=payload) if t not in TRUSTED_TYPES]
    if untrusted:
        raise UntrustedArtifactError(f"model {stored.tag} holds untrusted types {untrusted}")
    return skops.io.loads(payload, trusted=TRUSTED_TYPES)


def load_reference_profile(stored: StoredModel) -> bytes | None:
    """The hash-verified reference profile, or None for a model saved without one."""
    if "reference_sha256" not in stored.labels:
        return None
    return _verified(stored, REFERENCE_FILE, "reference_sha256")


def engine_names(stored: StoredModel) -> list[str]:
    """The engines the model was saved with, beside scikit-learn (none for `sklearn`)."""
    label = stored.labels.get("engine", engines.SKLEARN)
    return [] if label == engines.SKLEARN else label.split(engines.SEPARATOR)


@dataclass(frozen=True)
class LoadedForest:
    forest: engines.Forest
    engine: str  # the engine scoring: one of the model's engines, or "sklearn"
    fallbacks: dict[str, str]  # engine -> why the model is served without it


def load_forest(stored: StoredModel, choice: str = "auto", threads: int = 1) -> LoadedForest:
    """The forest as served: the first of the model's engines that loads (`choice` "auto"), or
    the one named, from its hash-verified artifact. An engine that cannot be loaded here (a
    library built for another platform, its runtime missing) is passed over with the reason;
    scikit-learn scores when none loads, its forest read only then. A tampered artifact, used or
    not, is refused."""
    names = engine_names(stored)
    known = {name: engines.ENGINES[name] for name in names if name in engines.ENGINES}
    # Every artifact is checked here, used or not: a tampered file refuses the model.
    _verified(stored, ARTIFACT_FILE, "sha256")
    artifacts = {
        name: _verified(stored, engine.artifact, engines.artifact_label(engine))
        for name, engine in known.items()
    }

    if choice == engines.SKLEARN:
        return LoadedForest(engines.SklearnForest(read_estimator(stored)), engines.SKLEARN, {})
    fallbacks = {}
    if choice != "auto" and choice not in names:
        kept = engines.SEPARATOR.join(names) or "none"
        fallbacks[choice] = f"{stored.tag} was saved without it (its engines: {kept})"
    for name in names if choice == "auto" else [n for n in names if n == choice]:
        if name not in known:
            fallbacks[name] = "not an engine this version knows"
            continue
        try:
            return LoadedForest(known[name].load(artifacts[name], threads), name, fallbacks)
        except Exception as error:  # noqa: BLE001 - any load failure: the next engine
            fallbacks[name] = f"cannot be loaded: {type(error).__name__}: {error}"
    sklearn = engines.SklearnForest(read_estimator(stored))
    return LoadedForest(sklearn, engines.SKLEARN, fallbacks)


def list_models() -> list[StoredModel]:
    """Every `fraud_rf` model, oldest first (none in an empty store)."""
    try:
        found = bentoml.models.list(MODEL_NAME)
    except NotFound:
        return []
    models = [get(str(m.tag)) for m in found]
    return sorted(models, key=lambda stored: stored.created)
