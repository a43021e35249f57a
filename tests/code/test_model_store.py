"""The model store: integrity labels, hash-verified loading, promotion by pinning, rollback."""

import hashlib

import numpy as np
import pytest
import skops.io
import yaml
from sklearn.ensemble import RandomForestClassifier

import model_store
from model_store import (
    ModelIntegrityError,
    ModelNotFoundError,
    PromotionError,
    UntrustedArtifactError,
)
from model_store.__main__ import main as model_store_cli
from model_store.store import ARTIFACT_FILE, LEGACY_PICKLE, REFERENCE_FILE
from settings import ColumnsConfig
from tests.conftest import run_module
from training.features import feature_schema

FEATURES = [feature.as_dict() for feature in feature_schema(ColumnsConfig())]


def _save(gate_passed: bool = True, seed: int = 0) -> model_store.StoredModel:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, len(FEATURES))).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    model = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=seed).fit(X, y)
    return model_store.save_model(
        model,
        features=FEATURES,
        threshold=0.42,
        gate_passed=gate_passed,
        metadata={"test_metrics": {"roc_auc": 0.97, "pr_auc": 0.8}},
    )


def _flip_a_byte(stored: model_store.StoredModel) -> None:
    artifact = stored.path / ARTIFACT_FILE
    payload = bytearray(artifact.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    artifact.write_bytes(bytes(payload))


def test_saved_model_carries_integrity_labels_and_schema():
    stored = _save()
    assert stored.tag.startswith("fraud_rf:")
    assert stored.labels["feature_hash"] == model_store.feature_hash(FEATURES)
    assert len(stored.labels["sha256"]) == 64
    assert stored.labels["gate"] == "passed"
    assert stored.labels["framework_version"].startswith("scikit-learn-")
    assert [f["name"] for f in stored.features] == [f["name"] for f in FEATURES]
    assert stored.threshold == 0.42
    by_name = {feature["name"]: feature for feature in stored.features}
    assert by_name["tx_amount"]["minimum"] == 0.0
    assert "minimum" not in by_name["customer_amount_zscore_30d"]  # unbounded: no None stored


def test_load_returns_the_same_model():
    stored = _save(seed=3)
    loaded, model = model_store.load(stored.tag)
    assert loaded.tag == stored.tag
    X = np.random.default_rng(1).normal(size=(20, len(FEATURES))).astype(np.float32)
    assert model.predict_proba(X).shape == (20, 2)
    assert model_store.verify(loaded) == stored.labels["sha256"]


def test_feature_hash_depends_on_order_and_dtype():
    swapped = [FEATURES[1], FEATURES[0], *FEATURES[2:]]
    retyped = [{**FEATURES[0], "dtype": "float64"}, *FEATURES[1:]]
    base = model_store.feature_hash(FEATURES)
    assert model_store.feature_hash(swapped) != base
    assert model_store.feature_hash(retyped) != base
    assert model_store.feature_hash([dict(f) for f in FEATURES]) == base


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """`python -m model_store ARGS` in this process (one test runs the entry point itself)."""
    capsys.readouterr()
    code = model_store_cli(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_tampered_artifact_is_refused_by_verify_and_load(capsys):
    stored = _save(seed=5)
    _flip_a_byte(stored)
    with pytest.raises(ModelIntegrityError) as raised:
        model_store.verify(model_store.get(stored.tag))
    message = str(raised.value)
    assert stored.tag in message and stored.labels["sha256"] in message
    assert raised.value.actual != raised.value.expected and len(raised.value.actual) == 64
    with pytest.raises(ModelIntegrityError):
        model_store.load(stored.tag)
    code, _, err = cli(capsys, "verify", stored.tag)
    assert code == 1
    assert "failed its integrity check" in err


def test_tampered_reference_profile_fails_verification():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(100, len(FEATURES))).astype(np.float32)
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, X[:, 0] > 0)
    stored = model_store.save_model(
        model,
        features=FEATURES,
        threshold=0.5,
        gate_passed=True,
        metadata={},
        reference_profile=b"profile bytes",
    )
    assert model_store.load_reference_profile(stored) == b"profile bytes"
    (stored.path / REFERENCE_FILE).write_bytes(b"profile bytez")
    with pytest.raises(ModelIntegrityError, match="reference_profile.bin"):
        model_store.verify(stored)
    with pytest.raises(ModelIntegrityError):
        model_store.load_reference_profile(stored)


def test_cli_verify_accepts_an_intact_model():
    stored = _save(seed=6)
    result = run_module("model_store", "verify", stored.tag)  # the entry point, in a process
    assert result.returncode == 0, result.stderr
    assert stored.labels["sha256"] in result.stdout


def test_cli_verify_of_an_unknown_tag_says_where_it_looked(capsys):
    code, _, err = cli(capsys, "verify", "fraud_rf:notinthestore2")
    assert code != 0
    assert "fraud_rf:notinthestore2 is not in the model store of" in err
    assert "python -m model_store list" in err
    assert "bentoml models pull" not in err  # BentoML's hint: no remote store here


@pytest.mark.parametrize("tag", ["fraud_rf", "fraud_rf:latest"])
def test_latest_is_never_resolved(tag):
    _save()
    with pytest.raises(ModelNotFoundError, match="no exact version"):
        model_store.get(tag)


def test_unknown_tag():
    with pytest.raises(ModelNotFoundError):
        model_store.get("fraud_rf:doesnotexist00")


def test_promote_pins_the_exact_tag_and_logs_it(promotion_files):
    stored = _save()
    record = model_store.promote(stored.tag, reason="first", **promotion_files)
    assert promotion_files["pin_file"].read_text().strip() == stored.tag
    assert model_store.current(promotion_files["pin_file"]) == stored.tag
    (logged,) = model_store.history(promotion_files["log_file"])
    assert logged == record
    assert (logged.action, logged.from_tag, logged.to_tag, logged.reason) == (
        "promote",
        None,
        stored.tag,
        "first",
    )
    assert logged.user and logged.time
    with pytest.raises(PromotionError, match="already"):
        model_store.promote(stored.tag, **promotion_files)


def test_gate_failure_blocks_promotion_unless_forced(promotion_files):
    failed = _save(gate_passed=False)
    with pytest.raises(PromotionError, match="failed its evaluation gate"):
        model_store.promote(failed.tag, **promotion_files)
    assert model_store.current(promotion_files["pin_file"]) is None
    record = model_store.promote(failed.tag, force=True, **promotion_files)
    assert record.forced
    assert model_store.history(promotion_files["log_file"])[-1].forced


def test_tampered_model_cannot_be_promoted(promotion_files):
    stored = _save(seed=8)
    _flip_a_byte(stored)
    with pytest.raises(ModelIntegrityError):
        model_store.promote(stored.tag, **promotion_files)
    assert model_store.current(promotion_files["pin_file"]) is None


def test_rollback_repins_the_previous_promotion(promotion_files):
    a, b, c = _save(seed=10), _save(seed=11), _save(seed=12)
    for stored in (a, b, c):
        model_store.promote(stored.tag, **promotion_files)
    record = model_store.rollback(reason="c misbehaves", **promotion_files)
    assert (record.action, record.from_tag, record.to_tag) == ("rollback", c.tag, b.tag)
    assert model_store.current(promotion_files["pin_file"]) == b.tag
    model_store.rollback(**promotion_files)
    assert model_store.current(promotion_files["pin_file"]) == a.tag
    with pytest.raises(PromotionError, match="no earlier"):
        model_store.rollback(**promotion_files)
    assert [r.action for r in model_store.history(promotion_files["log_file"])] == [
        "promote",
        "promote",
        "promote",
        "rollback",
        "rollback",
    ]


def test_rollback_refuses_a_pin_edited_behind_the_log(promotion_files):
    a, b = _save(seed=13), _save(seed=14)
    model_store.promote(a.tag, **promotion_files)
    model_store.promote(b.tag, **promotion_files)
    promotion_files["pin_file"].write_text("fraud_rf:edited00000000\n")
    with pytest.raises(PromotionError, match="disagrees"):
        model_store.rollback(**promotion_files)


def test_cli_promote_list_current_rollback(promotion_files, capsys):
    a, b = _save(seed=20), _save(seed=21)
    files = ["--pin-file", str(promotion_files["pin_file"])]
    files += ["--log-file", str(promotion_files["log_file"])]
    for stored in (a, b):
        code, _, err = cli(capsys, *files, "promote", stored.tag)
        assert code == 0, err
    code, listing, err = cli(capsys, *files, "list")
    assert code == 0, err
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert rows[b.tag].endswith("pinned") and rows[a.tag].endswith("before")
    assert "0.9700" in rows[a.tag]
    assert cli(capsys, *files, "rollback")[0] == 0
    assert cli(capsys, *files, "current")[1].strip() == a.tag
    failed = _save(gate_passed=False, seed=22)
    code, _, err = cli(capsys, *files, "promote", failed.tag)
    assert code == 1 and "failed its evaluation gate" in err
    code, _, err = cli(capsys, *files, "promote", failed.tag, "--force")
    assert code == 0 and "WARNING" in err


class Sneaky:
    """Stands for any class a crafted artifact could ask the loader to build."""


def _relabel(stored: model_store.StoredModel, payload: bytes) -> None:
    """Write an artifact and a matching sha256 label: what an attacker with store access does."""
    (stored.path / ARTIFACT_FILE).write_bytes(payload)
    info = yaml.safe_load((stored.path / "model.yaml").read_text())
    info["labels"]["sha256"] = hashlib.sha256(payload).hexdigest()
    (stored.path / "model.yaml").write_text(yaml.safe_dump(info))


def test_artifacts_load_only_trusted_types_even_with_a_matching_hash():
    stored = _save(seed=11)
    _, model = model_store.load(stored.tag)
    _relabel(stored, skops.io.dumps({"model": model, "payload": Sneaky()}))
    with pytest.raises(UntrustedArtifactError, match="Sneaky"):
        model_store.load(stored.tag)


def test_a_pickled_artifact_is_refused():
    stored = _save(seed=12)
    (stored.path / ARTIFACT_FILE).rename(stored.path / LEGACY_PICKLE)
    with pytest.raises(UntrustedArtifactError, match="pickle"):
        model_store.load(stored.tag)
