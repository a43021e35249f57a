"""Test isolation: a temporary BentoML store and promotion files, set before BentoML is imported."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

_SANDBOX = Path(tempfile.mkdtemp(prefix="fraud-bento-tests-"))
os.environ["BENTOML_HOME"] = str(_SANDBOX / "bentoml")
os.environ["FRAUD_STORE__PIN_FILE"] = str(_SANDBOX / "model.lock")
os.environ["FRAUD_STORE__PROMOTION_LOG"] = str(_SANDBOX / "promotions.jsonl")
os.environ["FRAUD_RUNS_DIR"] = str(_SANDBOX / "runs")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent
SMALL_TABLE = REPO_ROOT / "tests" / "fixtures" / "small_transactions.parquet"
SMALL_TABLE_SIMULATION = {"customers": 200, "terminals": 400, "days": 115, "seed": 11}
# A regime change for the retraining tests: genuine behaviour shifts from day 100 on.
# The simulator's columns as ops/examples/training.toml names them (a table in its own names).
EXAMPLE_CONFIG = REPO_ROOT / "ops" / "examples" / "training.toml"
EXAMPLE_RENAMING = {
    "transaction_id": "payment_id",
    "tx_datetime": "created_at",
    "customer_id": "card_id",
    "terminal_id": "merchant_terminal",
    "tx_amount": "amount_eur",
    "tx_fraud": "is_fraud",
}
REGIME_CHANGE = [
    *("--customers", "300", "--terminals", "600", "--seed", "21", "--drift-start-day", "100")
]


def run_module(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """Run `python -m ...` from the repository root with the test environment."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_small(runs_dir: Path, trials: int, *extra: str, env: dict[str, str] | None = None):
    """`python -m training train` on the small fixture table: fast, for tests."""
    return run_module(
        "training",
        "train",
        "--data",
        str(SMALL_TABLE),
        "--trials",
        str(trials),
        "--runs-dir",
        str(runs_dir),
        *extra,
        env=env,
        timeout=300,
    )


@pytest.fixture
def promotion_files(tmp_path: Path) -> dict[str, Path]:
    return {"pin_file": tmp_path / "model.lock", "log_file": tmp_path / "promotions.jsonl"}


def changed(row: dict, **change) -> dict:
    """A copy of a request row with fields replaced, added, or removed (value `KeyError`)."""
    copy = dict(row)
    for key, value in change.items():
        if value is KeyError:
            del copy[key]
        else:
            copy[key] = value
    return copy


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server from Debian's packages, for the whole session."""
    from ops.postgres import Cluster

    with Cluster.start() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def spark():
    """A Spark session in local mode (Debian's Java), for the whole session."""
    from training.spark_features import local_session

    session = local_session()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A throwaway Redis from Debian's packages, for the whole session."""
    from ops.redis_server import RedisServer

    with RedisServer.start() as server:
        yield server


def fresh_database(cluster, name: str) -> str:
    """The URL of a new, empty database `name` on a test PostgreSQL server."""
    import psycopg

    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return cluster.url.rsplit("/", 1)[0] + f"/{name}"


@dataclass(frozen=True)
class RegimeChange:
    before: Path  # 115 days of payments, genuine behaviour shifting from day 100
    after: Path  # the same simulation over 175 days
    champion: str  # trained on `before`, registered in the test store, pinned nowhere


@pytest.fixture(scope="session")
def regime_change(tmp_path_factory) -> RegimeChange:
    """Where the retraining test and the model-replacement drill start: the tables before and
    after a regime change and a champion trained before it (their files are dealt to the same
    test process, `LONGEST_FIRST` below, so it is made once)."""
    import model_store

    folder = tmp_path_factory.mktemp("regime_change")
    before, after = folder / "before.parquet", folder / "after.parquet"
    for table, days in ((before, "115"), (after, "175")):
        made = run_module(
            "training", "simulate", "--out", str(table), "--days", days, *REGIME_CHANGE
        )
        assert made.returncode == 0, made.stderr[-3000:]
    env = {
        "FRAUD_STORE__PIN_FILE": str(folder / "model.lock"),
        "FRAUD_STORE__PROMOTION_LOG": str(folder / "promotions.jsonl"),
        "FRAUD_RUNS_DIR": str(folder / "runs"),
        "FRAUD_TUNING__TRIALS": "2",
    }
    trained = run_module(
        "training", "train", "--data", str(before), "--promote", env=env, timeout=600
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    return RegimeChange(before, after, model_store.current(folder / "model.lock"))


# The longest test files, in the order they are handed out (about how long each takes with two
# test processes). pytest-xdist deals one file to each of the two processes, then a second one
# to each, then the next to whichever is free: so the longest go first and both processes finish
# together, and the drill and the retraining test, which share the `regime_change` fixture, are
# dealt first and third, to the same process, which makes the fixture once.
LONGEST_FIRST = [
    "tests/service/test_drill.py",  # 190 s
    "tests/service/test_container.py",  # 80 s, 250 s while the image's layers are not kept yet
    "tests/model/test_retrain.py",  # 95 s, the fixture made
    "tests/service/test_payments_servers.py",  # 200 s
    "tests/service/test_bench_smoke.py",  # 195 s
    "tests/model/test_training.py",  # 160 s
    "tests/service/test_fleet.py",  # 105 s
    "tests/service/test_faults.py",  # 90 s
    "tests/service/test_challenger_service.py",  # 60 s
    "tests/service/test_oip_clients.py",  # 25 s, 100 s on a fresh clone (its venv)
    "tests/service/test_drift_service.py",  # 45 s
    "tests/service/test_feature_table.py",  # 35 s
    "tests/service/test_prometheus.py",  # 30 s
]


def pytest_collection_modifyitems(items) -> None:
    rank = {path: position for position, path in enumerate(LONGEST_FIRST)}

    def order(item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(rank))

    items.sort(key=order)  # stable: each file's tests keep their order
