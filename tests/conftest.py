"""Test isolation: a temporary BentoML store and promotion files, set before BentoML is imported."""

from __future__ import annotations

import os
import sys
import tempfile
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


def fresh_database(cluster, name: str) -> str:
    """The URL of a new, empty database `name` on a test PostgreSQL server."""
    import psycopg

    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return cluster.url.rsplit("/", 1)[0] + f"/{name}"


# Seconds each of the longest test files took (two test processes, make test), longest first.
# Files are handed to the two processes in collection order, so the longest go first and the
# two finish together instead of one waiting on a long file picked up last.
LONGEST_FILES = {
    "tests/service/test_drill.py": 210,
    "tests/service/test_container.py": 180,
    "tests/service/test_bench_smoke.py": 120,
    "tests/model/test_retrain.py": 107,
    "tests/service/test_fleet.py": 90,
    "tests/model/test_training.py": 75,
    "tests/service/test_challenger_service.py": 74,
    "tests/service/test_faults.py": 62,
}


def pytest_collection_modifyitems(items) -> None:
    def cost(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return -LONGEST_FILES.get(path, 0)

    items.sort(key=cost)  # stable: each file's tests keep their order
