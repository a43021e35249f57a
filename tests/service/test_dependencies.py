"""The serving path never imports the training pipeline or its heavy dependencies."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
TRAINING_ONLY = {"training", "optuna", "matplotlib"}  # pandas comes with scikit-learn


def test_importing_the_service_loads_no_training_code(served_tag):
    probe = (
        "import json, sys, service; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {TRAINING_ONLY!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
