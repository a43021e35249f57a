"""Three ways to put BentoML's adaptive batching in front of the forest, measured side by side.

  A. fraud-bento: typed async APIs feeding one in-process batcher per worker
     (the one HTTP, OIP/HTTP and gRPC share);
  B. one service whose `@bentoml.api(batchable=True)` receives the HTTP requests directly;
  C. a gateway service calling a separate batchable runner service through `bentoml.depends`.

Same model, same machine, same run, one after the other; load from wrk at a fixed number of
connections with single-transaction requests. Prints a table and writes JSON.

    python ops/bench/serving_designs.py [--connections 32] [--seconds 15] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO_ROOT, Server  # noqa: E402  (ops/bench/run.py: the benchmark's servers)

from serving.scoring.runtime import pinned_tag  # noqa: E402
from settings import load_settings  # noqa: E402

DESIGNS_DIR = REPO_ROOT / "ops" / "bench" / "designs"
BENTOML = str(Path(sys.executable).parent / "bentoml")
DESIGNS = {
    "A fraud-bento (shared batcher)": ("service:FraudDetector", REPO_ROOT),
    "B batchable API, HTTP direct": ("batchable_api:BatchableAPI", DESIGNS_DIR),
    "C gateway + runner (depends)": ("gateway_runner:Gateway", DESIGNS_DIR),
}
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(url: str, body: Path, connections: int, seconds: int) -> dict:
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(REPO_ROOT / "ops" / "bench" / "wrk_post.lua"),
            url,
        ],
        env={**os.environ, "BODY_FILE": str(body)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = {
        f"p{pct}": float(value) * UNITS[unit]
        for pct, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)$", output, re.M)
    }
    total = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "latency_ms": latency,
        "requests": total,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("runs/serving_designs.json"))
    args = parser.parse_args()

    example = json.loads((REPO_ROOT / "ops" / "examples" / "test_request.json").read_text())
    scratch = Path(tempfile.mkdtemp(prefix="serving-designs-"))
    body = scratch / "one_row.json"
    body.write_text(json.dumps({"transactions": example["transactions"][:1]}))
    results = {}
    tag = pinned_tag(load_settings(), REPO_ROOT / "service.py")
    for name, (target, working_dir) in DESIGNS.items():
        command = [BENTOML, "serve", target, "--working-dir", str(working_dir), "--port", "{port}"]
        env = {
            "PYTHONPATH": str(REPO_ROOT),
            "FRAUD_SERVING__GRPC_PORT": "0",
            "FRAUD_MODEL_TAG": tag,
        }
        server = Server(name, command, "/readyz", "/predict", "rows", env)
        server.start(scratch / f"{target.split(':')[0]}.log")
        try:
            url = server.url("/predict")
            _wrk(url, body, args.connections, 3)  # warm-up
            results[name] = _wrk(url, body, args.connections, args.seconds)
        finally:
            server.stop()
        print(f"{name}: {results[name]}", flush=True)

    baseline = results[next(iter(DESIGNS))]["requests_per_s"]
    print(
        f"\n{args.connections} connections, {args.seconds}s, 1 transaction per request, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{'design':<36} {'req/s':>8} {'vs A':>6} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, result in results.items():
        print(
            f"{name:<36} {result['requests_per_s']:>8.0f} "
            f"{result['requests_per_s'] / baseline:>6.2f} {result['latency_ms']['p50']:>8.1f} "
            f"{result['latency_ms']['p99']:>8.1f} {result['non_2xx']:>8}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"connections": args.connections, "seconds": args.seconds, "results": results})
    )


if __name__ == "__main__":
    main()
