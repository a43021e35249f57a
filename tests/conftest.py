"""Test isolation: a temporary BentoML store and promotion files, set before BentoML is imported."""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from collections.abc import Callable
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


def made_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder `name`, filled by `make(folder)` once a test run: by the first test process to
    ask, while the others wait for it. It lives in FRAUD_TESTS_SHARED (set by make test for both
    its pytest runs), else in this run's temporary folder (never an older run's)."""
    base = tmp_path_factory.getbasetemp()
    shared = Path(
        os.environ.get("FRAUD_TESTS_SHARED")
        or (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base)
    )
    folder = shared / name
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "made").exists():
            folder.mkdir(exist_ok=True)
            make(folder)
            (folder / "made").touch()
    return folder


def export_model(tag: str, folder: Path) -> None:
    """Keep a model for the other test processes (each has its own BentoML store)."""
    import bentoml

    bentoml.models.export_model(tag, str(folder / "model.bentomodel"))
    (folder / "tag").write_text(tag)


def imported_model(folder: Path) -> str:
    """The model `export_model` kept, in this process's store (where it may be already)."""
    import bentoml

    tag = (folder / "tag").read_text()
    try:
        bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        bentoml.models.import_model(str(folder / "model.bentomodel"))
    return tag


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
    after a regime change and a champion trained before it, made once a test run."""

    def make(folder: Path) -> None:
        for days in ("115", "175"):
            made = run_module(
                "training", "simulate", "--out", str(folder / f"{days}.parquet"),
                "--days", days, *REGIME_CHANGE,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr[-3000:]
        env = {
            "FRAUD_STORE__PIN_FILE": str(folder / "model.lock"),
            "FRAUD_STORE__PROMOTION_LOG": str(folder / "promotions.jsonl"),
            "FRAUD_RUNS_DIR": str(folder / "runs"),
            "FRAUD_TUNING__TRIALS": "1",
        }
        trained = run_module(
            "training", "train", "--data", str(folder / "115.parquet"), "--promote",
            env=env, timeout=600,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        export_model((folder / "model.lock").read_text().strip(), folder)

    folder = made_once(tmp_path_factory, "regime-change", make)
    return RegimeChange(folder / "115.parquet", folder / "175.parquet", imported_model(folder))


# The longest test files, in the order they are handed out (about how long each takes with three
# test processes). pytest-xdist deals one file to each process, then the next to whichever is free:
# so the longest go first and the processes finish together.
LONGEST_FIRST = [
    "tests/service/test_drill.py",  # 270 s, the regime change made
    "tests/service/test_container.py",  # 80 s, 280 s while the image's layers are not kept yet
    "tests/service/test_payments_servers.py",  # 155 s
    "tests/service/test_bench_smoke.py",  # 210 s
    "tests/model/test_retrain.py",  # 135 s, after the drill has made the regime change
    "tests/model/test_training.py",  # 160 s
    "tests/service/test_fleet.py",  # 90 s
    "tests/service/test_faults.py",  # 65 s
    "tests/service/test_challenger_service.py",  # 60 s
    "tests/service/test_fuzz.py",  # 45 s
    "tests/monitoring/test_process.py",  # 45 s
    "tests/service/test_feature_table.py",  # 35 s
    "tests/service/test_oip_clients.py",  # 35 s, 100 s on a fresh clone (its venv)
    # The fast suite's longest: the first makes the served model, while the other processes run
    # files that need no model (test_pipeline, which needs it too, is dealt near the end).
    "tests/service/test_payments.py",  # 35 s
    "tests/code/test_payment_state.py",  # 40 s
    "tests/model/test_tuning_samples.py",  # 20 s
]


def pytest_collection_modifyitems(items) -> None:
    rank = {path: position for position, path in enumerate(LONGEST_FIRST)}

    def order(item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(rank))

    items.sort(key=order)  # stable: each file's tests keep their order
