"""The container image for real: `ops/container/image.py build` (bentoml build + containerize
with the machine's backend), run with a read-only root filesystem as in Kubernetes, answering
HTTP and gRPC, reporting its model, and draining in-flight requests on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

import model_store
from tests.conftest import REPO_ROOT
from tests.service.conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(2400)]
IMAGE_SCRIPT = REPO_ROOT / "ops" / "container" / "image.py"
CLIENT_SCRIPT = REPO_ROOT / "tests" / "service" / "oip_clients.py"
GRACE_S = 30


def _backend_available() -> bool:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    ):
        return True
    return all(shutil.which(tool) for tool in ("buildah", "podman", "debootstrap"))


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    folder = tmp_path_factory.mktemp("container")
    yield folder
    _podman(folder, "system", "reset", "--force", check=False)


def _podman(state, *args: str, check: bool = True, timeout: float = 120):
    result = subprocess.run(
        [sys.executable, str(IMAGE_SCRIPT), "--state", str(state), "podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def image(served_tag, state) -> str:
    if not _backend_available():
        pytest.skip("no container backend: neither a Docker engine nor buildah/podman/debootstrap")
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            str(IMAGE_SCRIPT),
            "--state",
            str(state),
            "build",
            "--tag",
            "fraud-bento:test",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "FRAUD_MODEL_TAG": served_tag},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"image built in {time.monotonic() - started:.0f} s")
    return result.stdout.strip().splitlines()[-1]


def test_the_image_serves_http_and_grpc_and_drains_on_sigterm(image, state, served_tag):
    http_port, grpc_port = free_port(), free_port()
    name = f"fraud-bento-test-{uuid.uuid4().hex[:8]}"
    _podman(
        state,
        "run",
        "--detach",
        "--name",
        name,
        "--publish",
        f"127.0.0.1:{http_port}:3000",
        "--publish",
        f"127.0.0.1:{grpc_port}:3001",
        # As in ops/k8s/deployment.yaml: read-only root, writable state on volumes.
        "--read-only",
        "--tmpfs",
        "/tmp",  # noqa: S108 - a tmpfs inside the container
        "--tmpfs",
        "/var/lib/bentoml",
        "--tmpfs",
        "/var/lib/fraud-bento",
        "--env",
        "BENTOML_HOME=/var/lib/bentoml",
        "--env",
        "FRAUD_MONITORING__DIRECTORY=/var/lib/fraud-bento/monitoring",
        image,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("container not ready:\n" + _podman(state, "logs", name).stderr[-3000:])

        example = json.loads((REPO_ROOT / "ops" / "examples" / "test_request.json").read_text())
        predicted = httpx.post(f"{url}/predict", json=example, timeout=30)
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["model_tag"] == served_tag

        info = httpx.get(f"{url}/model_info", timeout=10).json()
        stored = model_store.get(served_tag)
        assert info["tag"] == served_tag
        assert info["sha256"] == stored.labels["sha256"]

        rows = state / "rows.json"
        rows.write_text(json.dumps(example["transactions"]))
        grpc = subprocess.run(
            [
                sys.executable,
                str(CLIENT_SCRIPT),
                f"127.0.0.1:{http_port}",
                f"127.0.0.1:{grpc_port}",
                str(rows),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert grpc.returncode == 0, grpc.stderr[-3000:]
        report = json.loads(grpc.stdout)["grpc"]
        expected = [p["fraud_probability"] for p in predicted.json()["predictions"]]
        assert report["probability"] == pytest.approx(expected, abs=1e-6)

        outcomes = _sigterm_under_load(state, name, url, example)
        print(f"SIGTERM under load: {outcomes}")
        assert outcomes["completed"] > 0
        assert outcomes["failed_in_flight"] == 0, outcomes
        assert outcomes["exit_code"] == 0 and outcomes["stop_s"] < GRACE_S, outcomes
    finally:
        _podman(state, "rm", "--force", name, check=False)


def _sigterm_under_load(state, name: str, url: str, example: dict) -> dict:
    """SIGTERM while clients keep sending: every request that was accepted must complete."""
    body = {"transactions": example["transactions"] * 250}  # 500 rows: a few ms in flight each
    outcomes = {"completed": 0, "after_sigterm": 0, "failed_in_flight": 0, "errors": []}
    lock = threading.Lock()
    stop = threading.Event()
    signalled: list[float] = []

    def client() -> None:
        with httpx.Client(timeout=GRACE_S) as session:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = session.post(f"{url}/predict", json=body)
                    ok, detail = response.status_code == 200, response.status_code
                except httpx.HTTPError as error:
                    ok, detail = False, repr(error)
                with lock:
                    if ok:
                        outcomes["completed"] += 1
                    elif signalled and sent >= signalled[0]:
                        outcomes["after_sigterm"] += 1  # sent to a stopping server: may be refused
                    else:
                        outcomes["failed_in_flight"] += 1
                        outcomes["errors"].append(detail)
                if not ok:
                    time.sleep(0.05)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(2)
    started = time.monotonic()
    with lock:
        signalled.append(started)
    _podman(state, "kill", "--signal", "TERM", name)
    waited = _podman(state, "wait", name, timeout=GRACE_S + 30)
    outcomes["stop_s"] = time.monotonic() - started
    outcomes["exit_code"] = int(waited.stdout.strip().splitlines()[-1])
    stop.set()
    for thread in clients:
        thread.join(GRACE_S)
    return outcomes
