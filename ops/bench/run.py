"""The serving benchmark: the seed design, Seldon MLServer, and fraud-bento with each engine,
served in turn on one machine in one run, on the pinned model.

For each server and request size (1 and 100 transactions): a closed-loop run at fixed
concurrency (capacity), then open-loop steps at rising arrival rates until the p99 passes the
bound or errors appear. Writes JSON, a Markdown table and a PNG of p99 against offered rate.

    python ops/bench/run.py --profile quick            # make bench: a few minutes
    python ops/bench/run.py --profile full
    python ops/bench/run.py --profile smoke --servers seed,bento_fast   # the test's tiny run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx
import joblib
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import psutil  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import model_store  # noqa: E402
from serving.runtime import pinned_tag  # noqa: E402
from settings import load_settings  # noqa: E402

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
P99_BOUND_MS = 50.0
# uvloop 0.22 and later break MLServer 1.7.1's inference workers (get_event_loop() raises in
# a fresh process): the release MLServer was tested with is pinned.
MLSERVER_PACKAGES = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]


@dataclass(frozen=True)
class Profile:
    closed_seconds: float
    step_seconds: float
    concurrency: int
    rate_factors: tuple[float, ...]  # of the closed-loop capacity
    sizes: tuple[int, ...] = (1, 100)


PROFILES = {
    "smoke": Profile(1.0, 1.0, 4, (0.5, 1.0), sizes=(1, 100)),
    "quick": Profile(6.0, 5.0, 32, (0.25, 0.5, 0.75, 0.9, 1.0, 1.2)),
    "full": Profile(20.0, 15.0, 64, (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25)),
}


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
    body_kind: str  # "rows" or "v2"
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, log: Path) -> None:
        self.process = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in self.command],
            cwd=REPO_ROOT,
            env={**os.environ, **self.env},
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
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def sum_over_tree(self, read) -> float:
        total = 0.0
        root = psutil.Process(self.process.pid)
        for member in [root, *root.children(recursive=True)]:
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
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *MLSERVER_PACKAGES, *pins],
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


def servers(names: list[str], scratch: Path, tag: str) -> list[Server]:
    bento_env = {"FRAUD_MODEL_TAG": tag, "FRAUD_SERVING__GRPC_PORT": "0"}
    bento = [str(BIN / "bentoml"), "serve", ".", "--port", "{port}"]
    made: list[Server] = []
    for name in names:
        if name == "seed":
            command = [sys.executable, "-m", "uvicorn", "seed_app:app", "--app-dir", str(BENCH)]
            command += ["--port", "{port}", "--log-level", "warning"]
            made.append(
                Server(name, command, "/ready", "/predict", "rows", {"FRAUD_MODEL_TAG": tag})
            )
        elif name == "mlserver":
            repository = scratch / "mlserver-models"
            mlserver_repository(repository, tag)
            server = Server(name, [], "/v2/health/ready", "/v2/models/fraud_rf/infer", "v2")
            settings = {
                "http_port": server.port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
            }
            (repository / "settings.json").write_text(json.dumps(settings))
            server.command = [
                str(mlserver_venv(scratch / "mlserver-venv")),
                "start",
                str(repository),
            ]
            made.append(server)
        elif name == "bento_sklearn":
            env = {**bento_env, "FRAUD_SERVING__ENGINE": "sklearn"}
            made.append(Server(name, bento, "/readyz", "/predict", "rows", env))
        elif name == "bento_fast":
            made.append(Server(name, bento, "/readyz", "/predict", "rows", dict(bento_env)))
        elif name == "bento_fast_unmonitored":  # the cost of profiling and the prediction log
            env = {**bento_env, "FRAUD_MONITORING__ENABLED": "false"}
            made.append(Server(name, bento, "/readyz", "/predict", "rows", env))
        else:
            raise ValueError(f"unknown server {name}")
    return made


def bodies(scratch: Path, sizes: tuple[int, ...]) -> dict[tuple[str, int], Path]:
    example = json.loads((REPO_ROOT / "ops" / "examples" / "test_request.json").read_text())
    rows = example["transactions"]
    names = [name for name in rows[0] if name != "transaction_id"]
    made = {}
    for size in sizes:
        batch = [rows[i % len(rows)] for i in range(size)]
        matrix = [[row[name] for name in names] for row in batch]
        for kind, payload in (
            ("rows", {"transactions": batch}),
            (
                "v2",
                {
                    "inputs": [
                        {
                            "name": "features",
                            "shape": [size, len(names)],
                            "datatype": "FP32",
                            "data": matrix,
                        }
                    ],
                    "outputs": [{"name": "predict_proba"}],
                },
            ),
        ):
            path = scratch / f"{kind}-{size}.json"
            path.write_text(json.dumps(payload))
            made[(kind, size)] = path
    return made


def load(url: str, body: Path, mode: str, value: float, seconds: float) -> dict:
    result = subprocess.run(
        [sys.executable, str(BENCH / "loadgen.py"), url, str(body), f"--{mode}", str(value)]
        + ["--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def measure(
    server: Server, body: Path, size: int, profile: Profile, common_rate: float | None
) -> dict:
    url = server.url(server.predict_path)
    load(url, body, "concurrency", profile.concurrency, max(1.0, profile.closed_seconds / 3))
    cpu_before = server.cpu_seconds()
    closed = load(url, body, "concurrency", profile.concurrency, profile.closed_seconds)
    cpu_per_1000 = 1000 * (server.cpu_seconds() - cpu_before) / max(closed["requests"], 1)
    capacity = max(closed["throughput_rps"], 1.0)
    rates = sorted({round(capacity * factor, 1) for factor in profile.rate_factors})
    if common_rate:
        rates = sorted({*rates, common_rate})
    steps, peak_rss = [], server.rss_mb()
    for rate in rates:
        step = load(url, body, "rate", rate, profile.step_seconds)
        steps.append({"offered_rps": rate, **step})
        peak_rss = max(peak_rss, server.rss_mb())
        if step["errors"] or step["p99_ms"] > 4 * P99_BOUND_MS:
            break
    sustained = [
        s["offered_rps"]
        for s in steps
        if s["errors"] == 0
        and s["p99_ms"] <= P99_BOUND_MS
        and s["throughput_rps"] >= 0.9 * s["offered_rps"]
    ]
    best = max(sustained, default=0.0)
    return {
        "size": size,
        "closed_loop": closed,
        "open_loop": steps,
        "max_sustained_rps": best,
        "max_sustained_rows_per_s": best * size,
        "cpu_s_per_1000_requests": cpu_per_1000,
        "peak_rss_mb": peak_rss,
        "common_rate": common_rate,
    }


def at_rate(result: dict, rate: float | None) -> dict | None:
    """The open-loop step at `rate`, if it was run."""
    return next((s for s in result["open_loop"] if s["offered_rps"] == rate), None)


def table(results: dict, sizes: tuple[int, ...]) -> str:
    lines = []
    for size in sizes:
        rows = {name: by_size[str(size)] for name, by_size in results.items()}
        seed = rows.get("seed", {}).get("max_sustained_rps") or None
        common = next((r["common_rate"] for r in rows.values() if r["common_rate"]), None)
        lines += [
            f"\n{size} transaction(s) per request; p50/p95/p99 at the common rate "
            f"{common or 0:.0f} req/s",
            "",
            "| server | max req/s (p99 ≤ 50 ms, no errors) | rows/s | × seed | closed-loop req/s | "
            "p50 / p95 / p99 ms | CPU s / 1000 req | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, row in rows.items():
            step = at_rate(row, common)
            tail = (
                f"{step['p50_ms']:.1f} / {step['p95_ms']:.1f} / {step['p99_ms']:.1f}"
                if step
                else "-"
            )
            ratio = f"{row['max_sustained_rps'] / seed:.1f}" if seed else "-"
            best = row["max_sustained_rps"]
            lines.append(
                f"| {name} | {best:.0f} | {row['max_sustained_rows_per_s']:.0f} | {ratio}"
                f" | {row['closed_loop']['throughput_rps']:.0f} | {tail} "
                f"| {row['cpu_s_per_1000_requests']:.2f} | {row['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines)


def monitoring_overhead(results: dict, sizes: tuple[int, ...]) -> str:
    """Both sides of the monitoring cost: the same server with and without it, run back to back."""
    on, off = results.get("bento_fast"), results.get("bento_fast_unmonitored")
    if not (on and off):
        return ""
    lines = [
        "\nMonitoring overhead (request profiling + prediction log), bento_fast with and without",
        "",
        "| rows/request | closed-loop req/s on / off | throughput cost | "
        "CPU s/1000 req on / off | CPU cost |",
        "|---|---|---|---|---|",
    ]
    for size in sizes:
        with_, without = on[str(size)], off[str(size)]
        rps_on, rps_off = (r["closed_loop"]["throughput_rps"] for r in (with_, without))
        cpu_on, cpu_off = (r["cpu_s_per_1000_requests"] for r in (with_, without))
        lines.append(
            f"| {size} | {rps_on:.0f} / {rps_off:.0f} | {100 * (1 - rps_on / rps_off):+.1f}% "
            f"| {cpu_on:.2f} / {cpu_off:.2f} | {100 * (cpu_on / cpu_off - 1):+.1f}% |"
        )
    return "\n".join(lines)


def plot(results: dict, sizes: tuple[int, ...], path: Path) -> None:
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for name, by_size in results.items():
            steps = by_size[str(size)]["open_loop"]
            ax.plot(
                [s["offered_rps"] for s in steps], [s["p99_ms"] for s in steps], "o-", label=name
            )
        ax.axhline(P99_BOUND_MS, color="grey", linestyle="--", linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel="offered requests/s", ylabel="p99 latency (ms)")
        ax.set_title(f"{size} transaction(s) per request")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument(
        "--servers", default="seed,mlserver,bento_sklearn,bento_fast,bento_fast_unmonitored"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench")
    parser.add_argument("--scratch", type=Path, help="reuse a folder (keeps the MLServer venv)")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    tag = pinned_tag(load_settings(), REPO_ROOT / "service.py")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="fraud-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    request_bodies = bodies(scratch, profile.sizes)
    machine = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("bentoml", "scikit-learn", "onnxruntime", "numpy")},
        "date": time.strftime("%Y-%m-%d"),
        "model": tag,
        "profile": args.profile,
    }
    print(json.dumps(machine), flush=True)
    results: dict = {}
    common_rates: dict[int, float] = {}  # 3/4 of the first server's capacity, run on every server
    for server in servers(args.servers.split(","), scratch, tag):
        server.start(scratch / f"{server.name}.log")
        try:
            results[server.name] = {}
            for size in profile.sizes:
                body = request_bodies[(server.body_kind, size)]
                row = measure(server, body, size, profile, common_rates.get(size))
                results[server.name][str(size)] = row
                common_rates.setdefault(size, round(0.75 * row["closed_loop"]["throughput_rps"], 1))
                print(
                    f"{server.name} size {size}: max {row['max_sustained_rps']:.0f} req/s, "
                    f"closed-loop {row['closed_loop']['throughput_rps']:.0f} req/s",
                    flush=True,
                )
        finally:
            server.stop()
    if "mlserver" in results:
        machine["versions"]["mlserver"] = MLSERVER_PACKAGES[0].split("==")[1]
    (args.out / "results.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    markdown = table(results, profile.sizes) + monitoring_overhead(results, profile.sizes)
    print(markdown)
    (args.out / "results.md").write_text(markdown + "\n")
    plot(results, profile.sizes, args.out / "p99_vs_rate.png")
    print(f"\nwrote {args.out}/results.json, results.md, p99_vs_rate.png")


if __name__ == "__main__":
    main()
