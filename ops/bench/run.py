"""The serving benchmark, per core: a bare ASGI ceiling, BentoML's floor (a constant service,
default and lean), the seed design, Seldon MLServer and fraud-bento (with and without
monitoring, and its gRPC endpoint), served in turn on one machine in one run, on the pinned model.

Where the machine has two cores or more, each server runs pinned to core 0 (`taskset`, with every
process it starts) and the load generator to the others, so the figures are per server core.
For each server and request size (1 and 100 transactions): an open-loop ladder of arrival rates
on the cold server, a closed-loop burst at fixed concurrency (capacity), then the ladder again
after the burst. A ladder climbs fixed rates until the p99 passes 50 ms, an error appears or the
server falls behind, then bisects twice between the last rate it held and the first it did not.
Writes JSON, a Markdown table and a PNG of p99 against offered rate.

    python ops/bench/run.py --profile quick            # make bench
    python ops/bench/run.py --profile full
    python ops/bench/run.py --profile smoke --servers seed,bento   # the test's tiny run
    python ops/bench/run.py --servers bento,bento_baseline --baseline REV   # a change, A/B
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx
import joblib
import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import psutil  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import model_store  # noqa: E402
from ops.postgres import Cluster  # noqa: E402
from ops.redis_server import RedisServer  # noqa: E402
from serving.payments.payment_requests import payment_columns  # noqa: E402
from serving.scoring.runtime import pinned_tag  # noqa: E402
from settings import load_settings  # noqa: E402

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
DATA = REPO_ROOT / "data" / "transactions.parquet"  # make bench's table (make run's)
P99_BOUND_MS = 50.0
# uvloop 0.22 and later break MLServer 1.7.1's inference workers (get_event_loop() raises in
# a fresh process): the release MLServer was tested with is pinned.
MLSERVER_PACKAGES = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]


# Open-loop arrival rates (requests/s) per request size: dense where the servers' knees are.
LADDERS = {
    1: (100, 200, 400, 700, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000, 8000, 10000),
    100: (10, 25, 50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1500, 2000, 2500),
}
LIGHT_RATE = {1: 200, 100: 50}  # where the latency at light load is read
SERVER_CORES = "0"


@dataclass(frozen=True)
class Profile:
    closed_seconds: float
    step_seconds: float
    concurrency: int
    bisections: int = 2
    max_steps: int = 99
    sizes: tuple[int, ...] = (1, 100)
    held_bisections: int = 6  # alternating runs: each held rate to 1/64 of its search span


PROFILES = {
    "smoke": Profile(0.5, 0.5, 4, bisections=0, max_steps=1, held_bisections=1),
    "quick": Profile(5.0, 3.0, 32),
    "full": Profile(10.0, 8.0, 64),
}


def pinning() -> tuple[list[str], list[str], str]:
    """taskset prefixes for the server and the load generator, and what the figures mean."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return [], [], f"{cores} core: server and load generator share it"
    others = f"1-{cores - 1}" if cores > 2 else "1"
    return (
        ["taskset", "-c", SERVER_CORES],
        ["taskset", "-c", others],
        f"server (all its processes) pinned to core {SERVER_CORES}, load generator to {others}",
    )


SERVER_PIN, LOADGEN_PIN, PINNING = pinning()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    name: str
    command: list[str]
    ready_path: str
    predict_path: str
    body_kind: str  # "rows", "columns" (/predict_columns), "v2" (MLServer's outputs), "oip"
    # (fraud-bento's, JSON tensors), "oip_binary" (a JSON header, then raw FP32 values), "grpc",
    # "payments" (/score: a body a line, new payments each) or "production" (/predict: a body a
    # line, distinct test-period rows with new ids)
    env: dict[str, str] = field(default_factory=dict)
    load_options: list[str] = field(default_factory=list)  # for the load generator
    pinned: bool = True
    cwd: Path = REPO_ROOT  # what it serves (`bentoml serve .`): this checkout, or the baseline's
    prepare: Callable[[], None] | None = None  # before the server starts (a store, a backfill)
    cleanup: Callable[[], None] | None = None  # after it stopped
    # fraud-bento's monitoring folder (prediction log, profiles), emptied before each start: a
    # side logs into an empty log as a new deployment does, not into what earlier runs left
    # (the default folder under ~/bentoml had grown to an 18 GB log here: ~9 s a stop purging it)
    monitoring_directory: Path | None = None
    port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def target(self) -> str:
        """What the load generator is pointed at."""
        if self.body_kind == "grpc":
            return f"127.0.0.1:{self.grpc_port}"
        return self.url(self.predict_path)

    def start(self, log: Path) -> None:
        if self.monitoring_directory is not None:
            shutil.rmtree(self.monitoring_directory, ignore_errors=True)
            self.env["FRAUD_MONITORING__DIRECTORY"] = str(self.monitoring_directory)
        if self.prepare is not None:
            self.prepare()
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(
            (SERVER_PIN if self.pinned else []) + command,
            cwd=self.cwd,
            env={
                **os.environ,
                "FRAUD_SERVING__GRPC_PORT": str(self.grpc_port),
                "FRAUD_SERVING__GRPC_HOST": "127.0.0.1",
                **self.env,
            },
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url(self.ready_path), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{self.name} was not ready in time:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop every process of the server: BentoML's workers and the monitoring process run in
        process groups of their own and may outlive the serve command by seconds (a backlog
        written on the way out), on the core the next side is measured on."""
        if self.process is not None and self.process.poll() is None:
            tree = self.tree()
            os.killpg(self.process.pid, signal.SIGTERM)
            _, alive = psutil.wait_procs(tree, timeout=30)
            for process in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(alive, timeout=10)
            self.process.wait()
        if self.cleanup is not None:
            self.cleanup()

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sum_over_tree(self, read) -> float:
        total = 0.0
        for member in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += read(member)
        return total

    def cpu_seconds(self) -> float:
        return self.sum_over_tree(lambda p: p.cpu_times().user + p.cpu_times().system)

    def rss_mb(self) -> float:
        return self.sum_over_tree(lambda p: p.memory_info().rss) / 1e6


def mlserver_venv(folder: Path) -> Path:
    """A virtual environment with MLServer and this machine's scikit-learn and numpy."""
    python = folder / "bin" / "python"
    marker = folder / ".installed"
    pins = [f"scikit-learn=={version('scikit-learn')}", f"numpy=={version('numpy')}"]
    wanted = " ".join(MLSERVER_PACKAGES + pins)
    if not marker.is_file() or marker.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run(  # uv (a dependency of fraud-bento): seconds where pip took a minute
            [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python", str(python)]
            + [*MLSERVER_PACKAGES, *pins],
            check=True,
        )
        marker.write_text(wanted)
    return folder / "bin" / "mlserver"


def mlserver_repository(folder: Path, tag: str) -> Path:
    """An MLServer model folder serving the same artifact with adaptive batching on."""
    _, model = model_store.load(tag)
    model_dir = folder / "fraud_rf"
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")  # MLServer's scikit-learn runtime reads joblib
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "fraud_rf",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
                "max_batch_size": 64,
                "max_batch_time": 0.01,
            }
        )
    )
    return model_dir


BENTO = [str(BIN / "bentoml"), "serve", ".", "--port", "{port}"]


def bento_server(env: dict[str, str] | None = None) -> Server:
    """fraud-bento from the repository, scored with 1-transaction /predict bodies."""
    return Server("bento", BENTO, "/readyz", "/predict", "rows", env or {})


def held_rate(server: Server, body: Path) -> float:
    """The highest 1-transaction arrival rate the server holds (the quick ladder)."""
    return best(ladder(server, body, 1, PROFILES["quick"]))


def _backfill(data: Path, env: dict[str, str]) -> None:
    """/score's state filled from the table's last days, as a deployment does before serving."""
    subprocess.run(
        [sys.executable, "-m", "serving", "backfill", "--data", str(data)],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
    )


def score_server(name: str, scratch: Path, data: Path, bento_env: dict[str, str]) -> Server:
    """/score with the embedded state (`bento_score`) or on a Redis pinned with the load
    generator (`bento_score_redis`), each filled from the table before it starts."""
    if name == "bento_score":
        env = {**bento_env, "FRAUD_PAYMENTS__STATE_PATH": str(scratch / "score_state.db")}
        Path(env["FRAUD_PAYMENTS__STATE_PATH"]).unlink(missing_ok=True)
        return Server(
            name, BENTO, "/readyz", "/score", "payments", env, prepare=lambda: _backfill(data, env)
        )
    running: list[RedisServer] = []  # the Redis of this side, while it runs
    env = {**bento_env, "FRAUD_PAYMENTS__STORE": "redis", "FRAUD_PAYMENTS__REDIS_PREFIX": "bench:"}

    def prepare() -> None:
        running.append(RedisServer.start(command_prefix=LOADGEN_PIN))
        env["FRAUD_PAYMENTS__REDIS_URL"] = running[0].url
        _backfill(data, env)

    def cleanup() -> None:
        while running:
            running.pop().__exit__(None, None, None)

    return Server(
        name, BENTO, "/readyz", "/score", "payments", env, prepare=prepare, cleanup=cleanup
    )


def _pin_to_load_generator(cluster: Cluster) -> None:
    """A PostgreSQL's processes (and the backends it forks later) on the load generator's
    cores, as a database on another machine would be: off the server's core."""
    if not LOADGEN_PIN:
        return
    cores = sorted(os.sched_getaffinity(0) - {int(SERVER_CORES)})
    postmaster = psutil.Process(
        int((cluster.folder / "data" / "postmaster.pid").read_text().split()[0])
    )
    for process in [postmaster, *postmaster.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.cpu_affinity(cores)


def production_server(bento_env: dict[str, str]) -> Server:
    """/predict as production runs it: an API key required, the prediction log on PostgreSQL
    (pinned with the load generator, as a database on another machine), and the load generator
    sending the key, an X-Request-ID on each request and distinct test-period rows."""
    key = secrets.token_urlsafe(24)
    env = {**bento_env, "FRAUD_API_KEYS": key}
    running: list[Cluster] = []

    def prepare() -> None:
        running.append(Cluster.start())
        _pin_to_load_generator(running[0])
        env["FRAUD_MONITORING__DATABASE_URL"] = running[0].url

    def cleanup() -> None:
        while running:
            running.pop().__exit__(None, None, None)

    options = ["--header", f"X-API-Key: {key}", "--request-ids"]
    return Server(
        "bento_production", BENTO, "/readyz", "/predict", "production", env, options,
        prepare=prepare, cleanup=cleanup,
    )  # fmt: skip


def baseline_checkout(revision: str, folder: Path) -> Path:
    """The repository's files at `revision` (a commit before a change), to serve beside this
    checkout with the same environment and model: `bento_baseline`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def servers(
    names: list[str],
    scratch: Path,
    tag: str,
    challenger: str | None = None,
    data: Path = DATA,
    baseline: Path | None = None,
) -> list[Server]:
    bento_env = {"FRAUD_MODEL_TAG": tag}
    bento = BENTO
    uvicorn = [sys.executable, "-m", "uvicorn", "--port", "{port}", "--log-level", "warning"]
    floor = [str(BIN / "bentoml"), "serve", "constant:Constant", "--port", "{port}"]
    floor += ["--working-dir", str(BENCH / "floor")]
    made: list[Server] = []
    for name in names:
        if name == "ceiling":
            command = [*uvicorn, "ceiling:app", "--app-dir", str(BENCH / "floor")]
            made.append(Server(name, command, "/", "/predict", "rows"))
        elif name in ("bentoml_constant", "bentoml_constant_lean"):
            env = {"FLOOR_LEAN": "1" if name.endswith("lean") else "0"}
            made.append(Server(name, floor, "/readyz", "/predict", "rows", env))
        elif name == "seed":
            command = [*uvicorn, "seed_app:app", "--app-dir", str(BENCH)]
            made.append(Server(name, command, "/ready", "/predict", "rows", dict(bento_env)))
        elif name == "mlserver":
            repository = scratch / "mlserver-models"
            mlserver_repository(repository, tag)
            server = Server(name, [], "/v2/health/ready", "/v2/models/fraud_rf/infer", "v2")
            settings = {
                "http_port": server.port,
                "grpc_port": server.grpc_port,
                "metrics_port": free_port(),
            }
            (repository / "settings.json").write_text(json.dumps(settings))
            server.command = [
                str(mlserver_venv(scratch / "mlserver-venv")),
                "start",
                str(repository),
            ]
            made.append(server)
        elif name == "bento":
            made.append(Server(name, bento, "/readyz", "/predict", "rows", dict(bento_env)))
        elif name == "bento_baseline":  # the same, served from the --baseline commit's files
            if baseline is None:
                raise ValueError("bento_baseline needs the commit to compare with: --baseline REV")
            side = Server(name, bento, "/readyz", "/predict", "rows", dict(bento_env), cwd=baseline)
            made.append(side)
        elif name == "bento_columns":  # the columnar form: one list of values a transaction
            made.append(Server(name, bento, "/readyz", "/predict_columns", "columns", bento_env))
        elif name in ("bento_oip", "bento_oip_binary"):  # OIP over HTTP: JSON or raw tensors
            path, kind = "/v2/models/fraud_rf/infer", name.removeprefix("bento_")
            made.append(Server(name, bento, "/readyz", path, kind, dict(bento_env)))
        elif name == "bento_grpc":  # OIP over gRPC, raw tensor contents
            made.append(Server(name, bento, "/readyz", "", "grpc", dict(bento_env)))
        elif name == "bento_unmonitored":  # the cost of profiling and the prediction log
            env = {**bento_env, "FRAUD_MONITORING__ENABLED": "false"}
            made.append(Server(name, bento, "/readyz", "/predict", "rows", env))
        elif name == "bento_shadow":  # the cost of a challenger scoring every row in shadow
            env = {**bento_env, "FRAUD_CHALLENGER_TAG": challenger or ""}
            if challenger is None:
                raise ValueError("bento_shadow needs a second model: --challenger TAG")
            made.append(Server(name, bento, "/readyz", "/predict", "rows", env))
        elif name == "bento_sklearn":
            env = {**bento_env, "FRAUD_SERVING__ENGINE": "sklearn"}
            made.append(Server(name, bento, "/readyz", "/predict", "rows", env))
        elif name == "bento_production":
            made.append(production_server(bento_env))
        elif name in ("bento_score", "bento_score_redis"):
            made.append(score_server(name, scratch, data, bento_env))
        elif name == "bento_2workers":  # one worker per core: not pinned, shares the cores
            env = {**bento_env, "FRAUD_SERVING__WORKERS": "2", "FRAUD_PAYMENTS__STORE": "off"}
            made.append(Server(name, bento, "/readyz", "/predict", "rows", env, pinned=False))
        else:
            raise ValueError(f"unknown server {name}")
    for server in made:
        if server.command == BENTO:
            server.monitoring_directory = scratch / "monitoring" / server.name
    return made


def bodies(scratch: Path, sizes: tuple[int, ...]) -> dict[tuple[str, int], Path]:
    from tritonclient.grpc import service_pb2 as pb

    example = json.loads((REPO_ROOT / "ops" / "examples" / "test_request.json").read_text())
    rows = example["transactions"]
    names = [name for name in rows[0] if name != "transaction_id"]
    made = {}
    for size in sizes:
        batch = [rows[i % len(rows)] for i in range(size)]
        matrix = [[row[name] for name in names] for row in batch]
        infer = pb.ModelInferRequest(model_name="fraud_rf")
        infer.inputs.add(name="features", datatype="FP32", shape=[size, len(names)])
        infer.raw_input_contents.append(np.array(matrix, dtype=np.float32).tobytes())
        tensor = {"name": "features", "shape": [size, len(names)], "datatype": "FP32"}
        raw = np.array(matrix, dtype=np.float32).tobytes()
        binary_tensor = {**tensor, "parameters": {"binary_data_size": len(raw)}}
        binary_header = {"inputs": [binary_tensor], "outputs": [{"name": "probability"}]}
        tensor["data"] = matrix
        columns = {
            "columns": names,
            "data": matrix,
            "transaction_ids": [row["transaction_id"] for row in batch],
        }
        for kind, payload in (
            ("rows", json.dumps({"transactions": batch}).encode()),
            ("columns", json.dumps(columns).encode()),
            # the load generator finds the JSON header's end (Inference-Header-Content-Length)
            ("oip_binary", json.dumps(binary_header).encode() + raw),
            # the same tensor; each server asked for its probability output
            (
                "v2",
                json.dumps({"inputs": [tensor], "outputs": [{"name": "predict_proba"}]}).encode(),
            ),
            (
                "oip",
                json.dumps({"inputs": [tensor], "outputs": [{"name": "probability"}]}).encode(),
            ),
            ("grpc", infer.SerializeToString()),
        ):
            path = scratch / f"{kind}-{size}.body"
            path.write_bytes(payload)
            made[(kind, size)] = path
    return made


def payment_bodies(
    scratch: Path, sizes: tuple[int, ...], data: Path, tag: str, requests: int = 40_000
) -> dict[tuple[str, int], Path]:
    """/score bodies, one a line: new payments (new ids, times after the table's last payment,
    a millisecond apart) of the table's cards at its terminals with its amounts, `requests`
    payments in all per size; the load generator sends them in turn (past the end, again:
    retries, which the state counts once)."""
    columns = payment_columns(model_store.get(tag))
    table = pd.read_parquet(data)
    rng = np.random.default_rng(0)
    picked = table.iloc[rng.integers(0, len(table), requests)].to_dict("records")
    start = pd.Timestamp(table[columns.timestamp].max())
    made = {}
    for size in sizes:
        lines = []
        for first in range(0, requests, size):
            batch = picked[first : first + size]
            lines.append(
                json.dumps(
                    {
                        "payments": [
                            {
                                columns.transaction_id: f"bench-{size}-{first + i}",
                                columns.timestamp: (
                                    start + pd.Timedelta(milliseconds=first + i + 1)
                                ).isoformat(),
                                columns.customer_id: int(row[columns.customer_id]),
                                columns.terminal_id: int(row[columns.terminal_id]),
                                columns.amount: float(row[columns.amount]),
                            }
                            for i, row in enumerate(batch)
                        ]
                    }
                )
            )
        path = scratch / f"payments-{size}.body"
        path.write_text("\n".join(lines))
        made[("payments", size)] = path
    return made


def production_bodies(
    scratch: Path, sizes: tuple[int, ...], data: Path, requests: int = 40_000
) -> dict[tuple[str, int], Path]:
    """/predict bodies, one a line, as production sends them: distinct rows of the table's test
    period (days no model was trained on), each with a new transaction id, `requests` rows in all
    per size (the test period's rows in turn)."""
    from training.dataset import load_dataset
    from training.features import request_rows

    settings = load_settings()
    dataset = load_dataset(data, settings)
    rows = request_rows(dataset.features.loc[dataset.mask(dataset.split.test)], settings.columns)
    made = {}
    for size in sizes:
        lines = []
        for first in range(0, requests, size):
            batch = [
                rows[(first + i) % len(rows)] | {"transaction_id": f"prod-{size}-{first + i}"}
                for i in range(size)
            ]
            lines.append(json.dumps({"transactions": batch}))
        path = scratch / f"production-{size}.body"
        path.write_text("\n".join(lines))
        made[("production", size)] = path
    return made


def load(
    server: Server, body: Path, mode: str, value: float, seconds: float, options: list[str] = ()
) -> dict:
    kind = {
        "grpc": ["--grpc"],
        "payments": ["--lines"],
        "production": ["--lines"],
        "oip_binary": ["--oip-binary"],
    }
    result = subprocess.run(
        [*LOADGEN_PIN, sys.executable, str(BENCH / "loadgen.py"), server.target, str(body)]
        + [f"--{mode}", str(value), "--seconds", str(seconds)]
        + kind.get(server.body_kind, [])
        + server.load_options
        + list(options),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def holds(step: dict) -> bool:
    """The server kept up with the offered rate within the latency bound, without errors."""
    return (
        step["errors"] == 0
        and step["p99_ms"] <= P99_BOUND_MS
        and step["throughput_rps"] >= 0.9 * step["offered_rps"]
    )


def ladder(server: Server, body: Path, size: int, profile: Profile) -> list[dict]:
    """Open-loop steps up the size's ladder until one fails, then bisection below it."""
    steps: list[dict] = []

    def step(rate: float) -> dict:
        measured = {"offered_rps": rate, **load(server, body, "rate", rate, profile.step_seconds)}
        steps.append(measured)
        return measured

    held = 0.0
    for rate in LADDERS[size][: profile.max_steps]:
        if not holds(step(rate)):
            failed = rate
            for _ in range(profile.bisections):
                middle = round((held + failed) / 2, 1)
                if holds(step(middle)):
                    held = middle
                else:
                    failed = middle
            break
        held = rate
    return steps


def best(steps: list[dict]) -> float:
    return max((s["offered_rps"] for s in steps if holds(s)), default=0.0)


def measure(server: Server, body: Path, size: int, profile: Profile) -> dict:
    cold = ladder(server, body, size, profile)
    cpu_before = server.cpu_seconds()
    closed = load(server, body, "concurrency", profile.concurrency, profile.closed_seconds)
    cpu_per_1000 = 1000 * (server.cpu_seconds() - cpu_before) / max(closed["requests"], 1)
    after_burst = ladder(server, body, size, profile)
    light = next(
        (s for s in after_burst if s["offered_rps"] == LIGHT_RATE[size] and holds(s)), None
    )
    return {
        "size": size,
        "closed_loop": closed,
        "cold": cold,
        "after_burst": after_burst,
        "max_sustained_rps": {"cold": best(cold), "after_burst": best(after_burst)},
        "light_load": light,
        "cpu_s_per_1000_requests": cpu_per_1000,
        "peak_rss_mb": server.rss_mb(),
    }


# What monitoring did with the rows a side scored (its /metrics counters, whole run).
MONITORING_COUNTERS = {
    "scored_rows": "fraud_decisions",
    "profiled_rows": "fraud_profiled_rows",
    "profiling_dropped_rows": "fraud_profiling_dropped_rows",
    "logged_rows": "fraud_prediction_log_rows",
    "prediction_log_dropped_rows": "fraud_prediction_log_dropped_rows",
    "shadow_dropped_rows": "fraud_challenger_shadow_dropped_rows",
}


def monitoring_counts(server: Server) -> dict | None:
    """Rows scored and rows monitoring dropped on this side, from its /metrics (None for a
    server without fraud-bento's metrics); with a shadow challenger, the rows it scored
    (`fraud_decisions_total` under its tag, not in `scored_rows`) and dropped. Read after a
    pause: the monitoring process reports its drops to the worker asynchronously."""
    from prometheus_client.parser import text_string_to_metric_families

    time.sleep(2.0)
    try:
        answer = httpx.get(server.url("/metrics"), timeout=5)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200 or not answer.headers.get("content-type", "").startswith(
        "text/plain"
    ):
        return None  # no metrics here (a 404 page, a server answering every path alike)
    challenger = server.env.get("FRAUD_CHALLENGER_TAG")
    counts = {}
    try:
        for family in text_string_to_metric_families(answer.text):
            for key, metric in MONITORING_COUNTERS.items():
                if family.name == metric:
                    totals = [s for s in family.samples if s.name.endswith("_total")]
                    shadowed = [
                        s for s in totals if challenger and s.labels.get("model_tag") == challenger
                    ]
                    counts[key] = sum(s.value for s in totals if s not in shadowed)
                    if shadowed:
                        counts["shadowed_rows"] = sum(s.value for s in shadowed)
    except ValueError:  # plain text that is not Prometheus's exposition
        return None
    return counts if "scored_rows" in counts else None


def stolen_seconds() -> float:
    """The time the hypervisor has taken from the server's core since boot (steal, /proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name == f"cpu{SERVER_CORES}":
            return int(fields[7]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def stalls(log: Path, stolen_s: float) -> dict:
    """The side's event-loop stalls (its log's `fraud_bento.stalls` lines) and where the kernel
    saw the loop's thread in them, with the time the hypervisor took from the server's core over
    the whole side: a side that stalled off the CPU, with steal, met the machine, not itself."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if '"fraud_bento.stalls"' in line:
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
    total = {"count": len(found), "side_stolen_ms": round(stolen_s * 1000)}
    for key in ("stall_ms", "gc_ms", "on_cpu_ms", "run_queue_ms", "stolen_ms"):
        total[key] = round(sum(stall.get(key, 0) for stall in found))
    total["longest_ms"] = round(max((stall["stall_ms"] for stall in found), default=0))
    return total


def bisect_held(server: Server, body: Path, low: float, high: float, profile: Profile) -> float:
    """The highest rate between `low` and `high` the server holds, by the profile's bisections
    (0 when none of the rates tried held)."""
    held = 0.0
    for _ in range(profile.held_bisections):
        middle = round((low + high) / 2, 1)
        step = {"offered_rps": middle, **load(server, body, "rate", middle, profile.step_seconds)}
        if holds(step):
            held = low = middle
        else:
            high = middle
    return held


SETTLED_CORE_SHARE = 0.05  # an idle fraud-bento server's tree uses ~1% of a core


def settle(servers: tuple[Server, ...], timeout_s: float = 60.0) -> float:
    """Wait until the servers have worked off what an earlier step left them (a monitoring
    process writing its backlog, a challenger's queue): their process trees together below
    `SETTLED_CORE_SHARE` of a core over half a second. Both sides of a pair share the core, so
    without it one side's leftovers are measured as the other's cost. Seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = sum(server.cpu_seconds() for server in servers)
        time.sleep(0.5)
        if sum(server.cpu_seconds() for server in servers) - before < SETTLED_CORE_SHARE * 0.5:
            break
    return time.monotonic() - started


def _counted(server: Server) -> dict:
    return monitoring_counts(server) or {}


def alternating(
    on: Server, off: Server, bodies: dict, profile: Profile, runs: int, anchors: dict, logs: Path
) -> dict:
    """Held rates of one design with (`on`) and without (`off`) a cost, in `runs` alternating
    runs per size: both servers up (pinned alike) and warmed by a closed-loop burst, the load on
    one at a time and only once both are idle, the order swapped each run, each held rate found
    by bisection between half and 1.2 times the pair's `anchors[size]`. After each run the `on`
    side is loaded once more at its held rate, and what its monitoring scored, profiled, logged
    and dropped in that step is read from its /metrics."""
    for server in (off, on):
        server.start(logs / f"{server.name}-alternating.log")
    found: dict = {}
    try:
        for size in profile.sizes:
            for server in (off, on):  # warm: a fresh server's first step measured low
                body = bodies[(server.body_kind, size)]
                load(server, body, "concurrency", profile.concurrency, profile.closed_seconds)
            rounds = []
            for run in range(runs):
                held = {}
                settled = []
                for server in (off, on) if run % 2 == 0 else (on, off):
                    settled.append(settle((off, on)))
                    anchor = anchors[size]
                    body = bodies[(server.body_kind, size)]
                    held[server.name] = bisect_held(server, body, anchor / 2, anchor * 1.2, profile)
                at_held = {}
                if held[on.name]:
                    settled.append(settle((off, on)))
                    before = _counted(on)
                    body = bodies[(on.body_kind, size)]
                    load(on, body, "rate", held[on.name], profile.step_seconds)
                    after = _counted(on)
                    at_held = {key: after.get(key, 0) - before.get(key, 0) for key in after}
                rounds.append(
                    {"held": held, "monitoring_at_held_rate": at_held, "settled_s": settled}
                )
                waits = ", ".join(f"{seconds:.1f}" for seconds in settled)
                print(
                    f"{on.name} / {off.name} size {size} run {run + 1}: {held}"
                    f" (settled before each step in {waits} s)",
                    flush=True,
                )
            found[str(size)] = rounds
    finally:
        for server in (on, off):
            server.stop()
    return found


# Costs measured by alternating runs: (the side with it, the side without, what it is).
ALTERNATING = (
    ("bento", "bento_unmonitored", "Monitoring on vs off"),
    ("bento", "bento_baseline", "This checkout against the --baseline commit"),
    ("bento_shadow", "bento", "Shadow challenger"),
    ("bento_production", "bento", "Production-like traffic"),
)


def alternating_table(found: dict, on: str, off: str, what: str) -> str:
    if not found:
        return ""
    lines = [
        f"\n{what}: {on} against {off}, held req/s in alternating runs (the order swapped "
        "each run), and what monitoring did in one more step at each run's held rate",
        "",
        "| rows/request | runs | held on (mean ± sd) | held off (mean ± sd) | held rate lost "
        "| rows scored at held rate | profiled | logged | profiling dropped | log dropped "
        "| shadowed | shadow dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, rounds in found.items():
        on_rates = [r["held"][on] for r in rounds]
        off_rates = [r["held"][off] for r in rounds]
        counts = [r["monitoring_at_held_rate"] for r in rounds]

        def total(key: str, counts=counts) -> str:
            return f"{sum(c.get(key, 0) for c in counts):,.0f}"

        def spread(rates: list[float]) -> str:
            sd = statistics.stdev(rates) if len(rates) > 1 else 0.0
            return f"{statistics.mean(rates):.0f} ± {sd:.0f}"

        lines.append(
            f"| {size} | {len(rounds)} | {spread(on_rates)} | {spread(off_rates)} "
            f"| {_lost(statistics.mean(on_rates), statistics.mean(off_rates))} "
            f"| {total('scored_rows')} | {total('profiled_rows')} | {total('logged_rows')} "
            f"| {total('profiling_dropped_rows')} | {total('prediction_log_dropped_rows')} "
            f"| {total('shadowed_rows')} | {total('shadow_dropped_rows')} |"
        )
    return "\n".join(lines)


def stalls_table(found: dict) -> str:
    if not found:
        return ""
    lines = [
        "\nEvent-loop stalls per side (each over 20 ms), where the kernel saw the loop's thread in "
        "them, and the time the hypervisor took from the server's core over the side",
        "",
        "| server | stalls | total ms | longest ms | in GC | on CPU | run queue | stolen "
        "| stolen over the side ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, total in found.items():
        lines.append(
            f"| {name} | {total['count']} | {total['stall_ms']:,} | {total['longest_ms']} "
            f"| {total['gc_ms']:,} | {total['on_cpu_ms']:,} | {total['run_queue_ms']:,} "
            f"| {total['stolen_ms']:,} | {total['side_stolen_ms']:,} |"
        )
    return "\n".join(lines)


def monitoring_table(monitoring: dict) -> str:
    rows = [(name, counts) for name, counts in monitoring.items() if counts]
    if not rows:
        return ""
    lines = [
        "\nMonitoring's work per side (whole run), and a shadow challenger's: a side that drops "
        "rows is not free",
        "",
        "| server | rows scored | profiled (sampled) | profiling dropped | logged "
        "| prediction log dropped | shadowed | shadow dropped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, counts in rows:
        lines.append(
            f"| {name} | {counts['scored_rows']:,.0f} "
            + "".join(
                f"| {counts.get(key, 0):,.0f} "
                for key in (
                    "profiled_rows",
                    "profiling_dropped_rows",
                    "logged_rows",
                    "prediction_log_dropped_rows",
                    "shadowed_rows",
                    "shadow_dropped_rows",
                )
            )
            + "|"
        )
    return "\n".join(lines)


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.1f}" if base else "-"


def table(results: dict, sizes: tuple[int, ...]) -> str:
    lines = []
    for size in sizes:
        rows = {
            name: by_size[str(size)] for name, by_size in results.items() if str(size) in by_size
        }
        held = {name: min(r["max_sustained_rps"].values()) for name, r in rows.items()}
        seed, mlserver = held.get("seed") or None, held.get("mlserver") or None
        lines += [
            f"\n{size} transaction(s) per request ({PINNING})",
            "",
            "| server | closed-loop req/s | max open-loop req/s, p99 ≤ 50 ms, 0 errors: cold / "
            "after burst | rows/s | × seed | × MLServer | p50 / p99 ms at "
            f"{LIGHT_RATE[size]} req/s | CPU s / 1000 req | RSS MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            light = row["light_load"]  # "-": the server did not hold that rate
            tail = f"{light['p50_ms']:.2f} / {light['p99_ms']:.1f}" if light else "-"
            sustained = row["max_sustained_rps"]
            lines.append(
                f"| {name} | {row['closed_loop']['throughput_rps']:.0f} "
                f"| {sustained['cold']:.0f} / {sustained['after_burst']:.0f} "
                f"| {held[name] * size:.0f} | {_ratio(held[name], seed)} "
                f"| {_ratio(held[name], mlserver)} | {tail} "
                f"| {row['cpu_s_per_1000_requests']:.2f} | {row['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines)


def _lost(on: float, off: float) -> str:
    return f"{100 * (1 - on / off):+.1f}%" if off else "-"


def overhead(results: dict, sizes: tuple[int, ...], side: str, base: str, what: str) -> str:
    """Both sides of a cost: the same server with (`side`) and without it (`base`), run back to
    back in one run."""
    off = results.get(base)
    sides = [(side, results[side])] if side in results else []
    if not (off and sides):
        return ""
    lines = [
        f"\n{what} against {base}",
        "",
        "| server | rows/request | held req/s on / off | held rate lost | "
        "closed-loop req/s on / off | throughput lost | CPU s/1000 req on / off | CPU cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, on), size in ((side, size) for side in sides for size in sizes):
        with_, without = on[str(size)], off[str(size)]
        held_on, held_off = (min(r["max_sustained_rps"].values()) for r in (with_, without))
        rps_on, rps_off = (r["closed_loop"]["throughput_rps"] for r in (with_, without))
        cpu_on, cpu_off = (r["cpu_s_per_1000_requests"] for r in (with_, without))
        lines.append(
            f"| {name} | {size} | {held_on:.0f} / {held_off:.0f} "
            f"| {_lost(held_on, held_off)} | {rps_on:.0f} / {rps_off:.0f} "
            f"| {_lost(rps_on, rps_off)} "
            f"| {cpu_on:.2f} / {cpu_off:.2f} | {100 * (cpu_on / cpu_off - 1):+.1f}% |"
        )
    return "\n".join(lines)


def plot(results: dict, sizes: tuple[int, ...], path: Path) -> None:
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for name, by_size in results.items():
            if str(size) not in by_size:
                continue
            steps = sorted(by_size[str(size)]["after_burst"], key=lambda s: s["offered_rps"])
            ax.plot(
                [s["offered_rps"] for s in steps], [s["p99_ms"] for s in steps], "o-", label=name
            )
        ax.axhline(P99_BOUND_MS, color="grey", linestyle="--", linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel="offered requests/s", ylabel="p99 latency (ms)")
        ax.set_title(f"{size} transaction(s) per request, after a burst")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


DEFAULT_SERVERS = (
    "ceiling,bentoml_constant,bentoml_constant_lean,seed,mlserver,bento,bento_unmonitored,"
    "bento_shadow,bento_production,bento_columns,bento_oip,bento_oip_binary,bento_grpc,"
    "bento_2workers,bento_score,bento_score_redis"
)


def bench_challenger(data: Path) -> str:
    """A challenger for bento_shadow when none is given: trained like the champion on the same
    table with a shorter search (3 trials, 60 s), saved to the store, not pinned."""
    from training.train import run_training

    settings = load_settings()
    tuning = settings.tuning.model_copy(update={"trials": 3, "timeout_s": 60.0})
    trained = run_training(settings.model_copy(update={"tuning": tuning}), data, promote=False)
    print(f"challenger for bento_shadow: {trained.tag}", flush=True)
    return trained.tag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--servers", default=DEFAULT_SERVERS)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench")
    parser.add_argument("--scratch", type=Path, help="reuse a folder (keeps the MLServer venv)")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="the payment table /score's sides replay"
    )
    parser.add_argument(
        "--challenger",
        help="a second model of the same features, for bento_shadow (default: one is trained)",
    )
    parser.add_argument(
        "--alternating-runs",
        type=int,
        default=5,
        help="after the table, alternating runs of each pair in ALTERNATING measured (0: none)",
    )
    parser.add_argument(
        "--alternating-pairs",
        help="which pairs to alternate, named by the side with the cost, or ON/OFF (default:"
        " every pair both of whose sides were measured)",
    )
    parser.add_argument(
        "--baseline", help="a commit to serve as bento_baseline, beside this checkout (A/B)"
    )
    args = parser.parse_args()
    costs = {on for on, _, _ in ALTERNATING} | {f"{on}/{off}" for on, off, _ in ALTERNATING}
    if args.alternating_pairs and not set(args.alternating_pairs.split(",")) <= costs:
        parser.error(f"--alternating-pairs: each of {', '.join(sorted(costs))}")
    profile = PROFILES[args.profile]
    tag = pinned_tag(load_settings(), REPO_ROOT / "service.py")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="fraud-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    request_bodies = bodies(scratch, profile.sizes)
    names = args.servers.split(",")
    baseline = baseline_checkout(args.baseline, scratch / "baseline") if args.baseline else None
    if any(name.startswith("bento_score") for name in names):
        request_bodies |= payment_bodies(scratch, profile.sizes, args.data, tag)
    if "bento_production" in names:
        request_bodies |= production_bodies(scratch, profile.sizes, args.data)
    if "bento_shadow" in names and args.challenger is None:
        args.challenger = bench_challenger(args.data)
    machine = {
        "cores": os.cpu_count(),
        "pinning": PINNING,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("bentoml", "scikit-learn", "onnxruntime", "numpy")},
        "date": time.strftime("%Y-%m-%d"),
        "model": tag,
        "profile": args.profile,
        "baseline": args.baseline,
    }
    print(json.dumps(machine), flush=True)
    results: dict = {}
    monitoring: dict = {}
    stalled: dict = {}
    for server in servers(names, scratch, tag, args.challenger, args.data, baseline):
        log = scratch / f"{server.name}.log"
        stolen_before = stolen_seconds()
        server.start(log)
        try:
            results[server.name] = {}
            for size in profile.sizes:
                body = request_bodies[(server.body_kind, size)]
                row = measure(server, body, size, profile)
                results[server.name][str(size)] = row
                print(
                    f"{server.name} size {size}: max {row['max_sustained_rps']} req/s, "
                    f"closed-loop {row['closed_loop']['throughput_rps']:.0f} req/s",
                    flush=True,
                )
            monitoring[server.name] = monitoring_counts(server)
        finally:
            server.stop()
            stalled[server.name] = stalls(log, stolen_seconds() - stolen_before)
    alternated: dict = {}
    pairs = args.alternating_pairs.split(",") if args.alternating_pairs else None
    for on_name, off_name, _ in ALTERNATING if args.alternating_runs else ():
        pair = f"{on_name}/{off_name}"
        chosen = pairs is None or on_name in pairs or pair in pairs
        if not {on_name, off_name} <= results.keys() or not chosen:
            continue
        on, off = servers([on_name, off_name], scratch, tag, args.challenger, args.data, baseline)
        # One range for both sides, from the better of their ladders: a side whose ladder met a
        # bad minute (a fresh run's first server stalled) is not capped by its own figure.
        anchors = {
            size: max(
                rate
                for server in (on, off)
                for rate in results[server.name][str(size)]["max_sustained_rps"].values()
            )
            for size in profile.sizes
        }
        alternated[pair] = alternating(
            on, off, request_bodies, profile, args.alternating_runs, anchors, scratch
        )
    if "mlserver" in results:
        machine["versions"]["mlserver"] = MLSERVER_PACKAGES[0].split("==")[1]
    report = {
        "machine": machine,
        "results": results,
        "monitoring": monitoring,
        "stalls": stalled,
        "alternating": alternated,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    markdown = (
        table(results, profile.sizes)
        + overhead(
            results,
            profile.sizes,
            "bento",
            "bento_unmonitored",
            "Monitoring overhead (request profiling + prediction log)",
        )
        + overhead(results, profile.sizes, "bento_shadow", "bento", "Shadow challenger cost")
        + overhead(
            results,
            profile.sizes,
            "bento_production",
            "bento",
            "Production-like traffic (API key, X-Request-ID, distinct rows, PostgreSQL log)",
        )
        + monitoring_table(monitoring)
        + stalls_table(stalled)
        + "".join(
            alternating_table(alternated[f"{on}/{off}"], on, off, what)
            for on, off, what in ALTERNATING
            if f"{on}/{off}" in alternated
        )
    )
    print(markdown)
    (args.out / "results.md").write_text(markdown + "\n")
    plot(results, profile.sizes, args.out / "p99_vs_rate.png")
    print(f"\nwrote {args.out}/results.json, results.md, p99_vs_rate.png")


if __name__ == "__main__":
    main()
