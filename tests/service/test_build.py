"""`bentoml build` from the repository root, and the built Bento serving the same answers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.service.conftest import BENTOML, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built_tag(served_tag) -> str:
    result = subprocess.run(
        [BENTOML, "build", ".", "--output", "tag"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tag = result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("fraud_detector:")
    return tag


def test_bento_carries_the_pinned_model_and_only_the_service_code(built_tag, served_tag):
    bento = bentoml.get(built_tag)
    manifest = yaml.safe_load(Path(bento.path_of("bento.yaml")).read_text())
    models = [m["tag"] for service in manifest["services"] for m in service["models"]]
    assert models == [served_tag]
    source = Path(bento.path_of("src"))
    files = {path.relative_to(source).as_posix() for path in source.rglob("*.py")}
    for needed in (
        "service.py",
        "settings.py",
        "bentoml_internals.py",
        "serving/scoring/batching.py",
        "model_store/store.py",
    ):
        assert needed in files, needed
    assert {"monitoring/profiler.py", "monitoring/whylogs_adapter.py"} <= files
    assert not any(f.startswith(("tests/", "training/", ".venv/")) for f in files)
    requirements = Path(bento.path_of("env/python/requirements.txt")).read_text()
    assert "bentoml==" in requirements and "optuna" not in requirements


def test_built_bento_answers_like_the_source(built_tag, server, transactions, tmp_path):
    built = start_server(built_tag, tmp_path / "serve-built.log")
    try:
        assert built.process.poll() is None, built.output()[-3000:]
        body = {"transactions": transactions[:40]}
        from_source = httpx.post(f"{server.url}/predict", json=body).json()
        from_bento = httpx.post(f"{built.url}/predict", json=body).json()
        assert from_bento["model_tag"] == from_source["model_tag"]
        np.testing.assert_array_equal(
            [p["fraud_probability"] for p in from_bento["predictions"]],
            [p["fraud_probability"] for p in from_source["predictions"]],
        )
        info = httpx.get(f"{built.url}/model_info").json()
        assert info["sha256"] == httpx.get(f"{server.url}/model_info").json()["sha256"]
    finally:
        assert stop_server(built) == 0
