"""The container image for real: `ops/container/image.py build` (bentoml build + containerize
with the machine's backend), run with a read-only root filesystem as in Kubernetes, answering
HTTP and gRPC with an API key, reporting its model, and draining in-flight requests on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

import model_store
from settings import ColumnsConfig
from tests.conftest import REPO_ROOT
from tests.service.conftest import answers, free_port
from training.features import feature_names

pytestmark = [pytest.mark.slow, pytest.mark.container, pytest.mark.timeout(2400)]
IMAGE_SCRIPT = REPO_ROOT / "ops" / "container" / "image.py"
GRACE_S = 30
API_KEY = "container-test-key-0123456789"  # pragma: allowlist secret
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ORDER = feature_names(ColumnsConfig())


def _backend_available() -> bool:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    ):
        return True
    return all(shutil.which(tool) for tool in ("buildah", "podman", "debootstrap"))


@pytest.fixture(scope="module")
def state():
    """The backend's storage, kept between test runs (in the temporary folder): the base image and
    the layer of the locked packages are built once and reused until the lock changes. Only the
    containers and the layers no image uses any more are removed at the end."""
    folder = Path(tempfile.gettempdir()) / "fraud-bento-container-tests"  # BentoML refuses dot-dirs
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    _podman(folder, "rm", "--all", "--force", check=False)
    _podman(folder, "image", "prune", "--force", check=False)


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


def test_the_image_serves_http_and_grpc_and_drains_on_sigterm(image, state, served_tag, tmp_path):
    http_port, grpc_port = free_port(), free_port()
    keys = tmp_path / "api-keys"
    keys.write_text(f"{API_KEY}\n")
    keys.chmod(0o444)
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
        "--volume",
        f"{keys}:/run/secrets/fraud-bento/api-keys:ro",  # authentication is on in the image
        "--env",
        "BENTOML_HOME=/var/lib/bentoml",
        "--env",
        "FRAUD_MONITORING__DIRECTORY=/var/lib/fraud-bento/monitoring",  # pragma: allowlist secret
        image,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        if not answers(f"{url}/readyz", timeout=180):
            pytest.fail("container not ready:\n" + _podman(state, "logs", name).stderr[-3000:])

        example = json.loads((REPO_ROOT / "ops" / "examples" / "test_request.json").read_text())
        assert httpx.post(f"{url}/predict", json=example, timeout=30).status_code == 401
        predicted = httpx.post(f"{url}/predict", json=example, headers=AUTH, timeout=30)
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["model_tag"] == served_tag

        info = httpx.get(f"{url}/model_info", headers=AUTH, timeout=10).json()
        stored = model_store.get(served_tag)
        assert info["tag"] == served_tag
        assert info["sha256"] == stored.labels["sha256"]
        # the engines travel in the image: the model's first one serves, none passed over
        assert info["engine"] == stored.labels["engine"].split("+")[0]
        assert info["engine_fallbacks"] == {}

        expected = [p["fraud_probability"] for p in predicted.json()["predictions"]]
        assert _grpc_probabilities(grpc_port, example["transactions"]) == pytest.approx(
            expected, abs=1e-6
        )

        outcomes = _sigterm_under_load(state, name, url, example)
        print(f"SIGTERM under load: {outcomes}")
        assert outcomes["completed"] > 0
        assert outcomes["failed_in_flight"] == 0, outcomes
        assert outcomes["exit_code"] == 0 and outcomes["stop_s"] < GRACE_S, outcomes
    finally:
        _podman(state, "rm", "--force", name, check=False)


def test_the_image_installs_exactly_the_locked_versions(image, state):
    """requirements/serving.txt, the lock's export, is what the image holds: every package at its
    pinned version, and nothing else but the installer's own."""
    listing = (
        "import json, platform, importlib.metadata as m; print(json.dumps([platform.python_version"
        "(), {d.metadata['Name']: d.version for d in m.distributions()}]))"
    )
    ran = _podman(state, "run", "--rm", "--entrypoint", "python", image, "-c", listing)
    python, packages = json.loads(ran.stdout.splitlines()[-1])
    installed = {canonicalize_name(name): version for name, version in packages.items()}
    image_python = {"python_full_version": python, "python_version": python.rsplit(".", 1)[0]}
    pinned = {}
    for line in (REPO_ROOT / "requirements" / "serving.txt").read_text().splitlines():
        if line[:1].isalnum():
            requirement = Requirement(line.rstrip(" \\"))
            if requirement.marker is None or requirement.marker.evaluate(image_python):
                (specifier,) = requirement.specifier
                pinned[canonicalize_name(requirement.name)] = specifier.version
    assert {name: installed.get(name) for name in pinned} == pinned
    assert set(installed) - set(pinned) <= {"pip", "setuptools", "wheel"}


def _grpc_probabilities(port: int, transactions: list[dict]) -> list[float]:
    matrix = np.array([[row[name] for name in ORDER] for row in transactions], np.float32)
    request = pb.ModelInferRequest(model_name="fraud_rf")
    request.inputs.add(name="features", datatype="FP32", shape=list(matrix.shape))
    request.raw_input_contents.append(matrix.tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(request, metadata=(("x-api-key", API_KEY),), timeout=30)
    return np.frombuffer(answer.raw_output_contents[0], np.float32).tolist()


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
                    response = session.post(f"{url}/predict", json=body, headers=AUTH)
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
