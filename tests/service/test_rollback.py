"""The rollback drill of ops/DEPLOYMENT.md, for real: two models, two Bentos, a rollback by model
tag and a rebuild serve model A again, and the older Bento keeps serving what it was built with."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

import model_store
from tests.conftest import REPO_ROOT, run_module, train_small
from tests.service.conftest import BENTOML, start_server, stop_server

pytestmark = pytest.mark.slow


def _train(env: dict[str, str], runs, seed: int) -> None:
    result = train_small(runs, 1, env={**env, "FRAUD_SEED": str(seed)})
    assert result.returncode == 0, result.stderr[-3000:]


def _model_store(env: dict[str, str], *args: str) -> str:
    result = run_module("model_store", *args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def _build(env: dict[str, str]) -> str:
    result = subprocess.run(
        [BENTOML, "build", ".", "--output", "tag"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def _served(bento: str, env: dict[str, str], folder) -> dict:
    server = start_server(bento, folder / "serve.log", env=env)
    try:
        assert server.process.poll() is None, server.output()[-3000:]
        return httpx.get(f"{server.url}/model_info", timeout=10).json()
    finally:
        stop_server(server)


def test_rollback_by_model_tag_and_by_bento_tag(tmp_path):
    env = {
        **os.environ,
        "FRAUD_STORE__PIN_FILE": str(tmp_path / "model.lock"),
        "FRAUD_STORE__PROMOTION_LOG": str(tmp_path / "promotions.jsonl"),
    }
    before = {m.tag for m in model_store.list_models()}
    _train(env, tmp_path / "runs_a", seed=1)
    (model_a,) = {m.tag for m in model_store.list_models()} - before
    _train(env, tmp_path / "runs_b", seed=2)
    (model_b,) = {m.tag for m in model_store.list_models()} - before - {model_a}

    _model_store(env, "promote", model_a, "--reason", "drill: A")
    bento_a = _build(env)
    _model_store(env, "promote", model_b, "--reason", "drill: B")
    bento_b = _build(env)
    assert _model_store(env, "current") == model_b

    _model_store(env, "rollback")
    assert _model_store(env, "current") == model_a
    bento_rebuilt = _build(env)
    assert len({bento_a, bento_b, bento_rebuilt}) == 3

    sha_a = model_store.get(model_a).labels["sha256"]
    rebuilt = _served(bento_rebuilt, env, tmp_path / "rebuilt")
    assert (rebuilt["tag"], rebuilt["sha256"]) == (model_a, sha_a)
    older = _served(bento_a, env, tmp_path / "older")
    assert (older["tag"], older["sha256"]) == (model_a, sha_a)
    # A built Bento serves the model recorded in it, whatever is pinned now.
    assert _served(bento_b, env, tmp_path / "b")["tag"] == model_b
