"""A real fraud-bento server: a small model trained and promoted into the test store, then
`bentoml serve` in its own process group on free ports, always stopped at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import model_store
from model_store.engines import PARITY_TOLERANCE
from serving.scoring.runtime import FraudModel
from settings import ColumnsConfig, load_settings
from tests.conftest import (
    REPO_ROOT,
    SMALL_TABLE,
    export_model,
    imported_model,
    made_once,
    train_small,
)
from training.data import read_table
from training.features import build_features, feature_names, request_rows

COLUMNS = ColumnsConfig()
BENTOML = str(Path(sys.executable).parent / "bentoml")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str, timeout: float, alive=lambda: True) -> bool:
    """Whether GET `url` answers 200 within `timeout` seconds (while `alive()` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


@dataclass
class Server:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def private_home(folder: Path) -> Path:
    """A BENTOML_HOME sharing the test store's models and Bentos.

    BentoML wipes $BENTOML_HOME/prometheus_multiproc_dir whenever a server starts, so two
    servers on one home would erase each other's metrics.
    """
    shared = Path(os.environ["BENTOML_HOME"])
    home = folder / "bentoml_home"
    home.mkdir(parents=True)
    for name in ("models", "bentos"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        (home / name).symlink_to(shared / name)
    return home


def start_server(
    target: str, log: Path, env: dict[str, str] | None = None, timeout: float = 90
) -> Server:
    http_port, grpc_port = free_port(), free_port()
    home = private_home(log.parent)
    handle = log.open("w")
    process = subprocess.Popen(
        [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(http_port)],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            "BENTOML_HOME": str(home),
            "FRAUD_SERVING__GRPC_PORT": str(grpc_port),
            "FRAUD_SERVING__GRPC_HOST": "127.0.0.1",
            **(env or {}),
        },
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(process, http_port, grpc_port, log)
    if answers(f"{server.url}/readyz", timeout, alive=lambda: process.poll() is None):
        return server
    if process.poll() is not None:
        return server  # it refused to start: callers read its exit code and output
    stop_server(server)
    raise TimeoutError(f"server not ready in {timeout}s:\n{server.output()[-3000:]}")


def stop_server(server: Server, grace: float = 20) -> int:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
    return server.process.returncode


@pytest.fixture(scope="session")
def served_tag(tmp_path_factory) -> str:
    """A small model, trained once a test run and promoted to this test process's pin file."""

    def make(folder: Path) -> None:
        result = train_small(folder / "runs", 2, "--promote")
        assert result.returncode == 0, result.stderr[-3000:]
        export_model(model_store.current(store.pin_file), folder)

    store = load_settings().store
    tag = imported_model(made_once(tmp_path_factory, "served-model", make))
    if model_store.current(store.pin_file) != tag:
        model_store.promote(tag, pin_file=store.pin_file, log_file=store.promotion_log)
    return tag


@pytest.fixture(scope="session")
def server(served_tag, tmp_path_factory) -> Iterator[Server]:
    running = start_server(".", tmp_path_factory.mktemp("server") / "serve.log")
    assert running.process.poll() is None, running.output()[-3000:]
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def transactions() -> list[dict]:
    """Feature rows of the small table's last days, as a client would send them."""
    features = build_features(read_table(SMALL_TABLE), COLUMNS, delay_days=7).tail(300)
    ids = features[COLUMNS.transaction_id].astype(str)
    rows = request_rows(features, COLUMNS)
    return [{**row, "transaction_id": tx_id} for row, tx_id in zip(rows, ids, strict=True)]


@pytest.fixture(scope="session")
def offline_probabilities(served_tag, transactions) -> np.ndarray:
    """The served model's probabilities over the same rows, in one offline call of its engine
    (and within the parity tolerance of scikit-learn's predict_proba)."""
    model = FraudModel.load(served_tag)
    names = feature_names(COLUMNS)
    matrix = np.array([[row[name] for name in names] for row in transactions], dtype=np.float32)
    probabilities = model.predict_proba(matrix)
    reference = model.estimator.predict_proba(matrix)[:, 1]
    np.testing.assert_allclose(probabilities, reference, atol=PARITY_TOLERANCE)
    return probabilities


def at_window_start(window_s: float) -> None:
    """Profiling windows are aligned on the clock: wait until just after a boundary, so traffic
    sent now lands in one window."""
    time.sleep(window_s - time.time() % window_s + 0.05)


def run_ops_script(script: str, *args: str, tag: str, folder: Path, timeout: float):
    """An ops/bench script on `tag`, with its own BentoML home (its servers' metrics apart)."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "ops" / "bench" / script), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "FRAUD_MODEL_TAG": tag, "BENTOML_HOME": str(private_home(folder))},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metric_samples(server: Server, name: str) -> dict[str, float]:
    """Prometheus samples whose name starts with `name`, keyed by the full sample line head."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    samples = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


@pytest.fixture(scope="session")
def earlier_payments(served_tag, tmp_path_factory) -> Path:
    """The small table's payments before the served model's test period."""
    table = read_table(SMALL_TABLE)
    start = pd.Timestamp(model_store.get(served_tag).metadata["test_window"]["start"])
    earlier = tmp_path_factory.mktemp("payments") / "earlier.parquet"
    table[table[COLUMNS.timestamp] < start].to_parquet(earlier)
    return earlier


@pytest.fixture(scope="session")
def payment_history(earlier_payments) -> Path:
    """Those payments backfilled into an online state file with `python -m serving backfill`
    (a deployment runs it before starting)."""
    from serving.__main__ import main as serving_cli

    state = earlier_payments.parent / "payment_state.db"
    assert serving_cli(["backfill", "--data", str(earlier_payments), "--state", str(state)]) == 0
    return state


@pytest.fixture(scope="session")
def pipeline(served_tag, payment_history, tmp_path_factory):
    """The service's application with its model, started (lifespan) in this process: one per
    test process, since the service reads its settings once, at import."""
    from starlette.testclient import TestClient

    grpc_port = free_port()
    monitoring = tmp_path_factory.mktemp("pipeline")
    settings = {
        "FRAUD_MODEL_TAG": served_tag,
        "FRAUD_SERVING__GRPC_PORT": str(grpc_port),
        "FRAUD_SERVING__GRPC_HOST": "127.0.0.1",
        "FRAUD_MONITORING__DIRECTORY": str(monitoring),
        "FRAUD_PAYMENTS__STATE_PATH": str(payment_history),
    }
    patch = pytest.MonkeyPatch()
    for name, value in settings.items():
        patch.setenv(name, value)
    import bentoml_internals
    import service

    server_context = bentoml_internals.server_context()
    server_context.service_name = server_context.bento_name = service.FraudDetector.name
    server_context.bento_version = "in-process"
    with TestClient(service.FraudDetector.to_asgi(is_main=True)) as client:
        patch.undo()  # read by now: the servers later tests start must not inherit them
        client.grpc_port = grpc_port
        client.monitoring_directory = monitoring
        yield client
