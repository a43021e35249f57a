"""Overload: what a server does when offered more than it can serve, per core.

For each request size (1 and 100 transactions a /predict): the closed-loop capacity C (32
connections), then open-loop steps of `--seconds` each, back to back: 1.2 C, 2 C and 4 C, then
0.7 C right after the 4 C step (recovery). A step passes when
- goodput (answers 200 per second offered) is at least 90% of C (at 0.7 C: 90% of the offered
  rate, which is all of it less the allowance);
- the p99 of the answered requests is within 50 ms (recovery: of its first second, too);
- every refusal is a 503 with Retry-After, answered within 5 ms at p99;
- no request failed otherwise (a connection error, a timeout, another status).
Latency counts from each request's scheduled time (the load generator is open loop).

    python ops/bench/overload.py --out runs/bench-overload [--baseline REV]

With --baseline the same steps run on that commit's files served beside this checkout (the same
environment and model): the change's before and after, in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import (  # noqa: E402
    PINNING,
    PROFILES,
    REPO_ROOT,
    Server,
    baseline_checkout,
    bodies,
    load,
    load_settings,
    pinned_tag,
    servers,
)

MULTIPLES = (1.2, 2.0, 4.0)
# The client's connection pool, opened before each step (a payment gateway keeps one): without
# it the load generator opens a connection for every request that finds none idle, and a step's
# first second measured the storm of new connections (up to 1,024 in a second), not the server.
POOL = 256
RECOVERY = 0.7  # offered right after the last multiple
CONCURRENCY = 32
ANSWER_P99_MS = 50.0
REFUSAL_P99_MS = 5.0
MIN_GOODPUT = 0.9


def passes(step: dict, capacity: float) -> dict[str, bool]:
    """Each criterion of a step (module docstring)."""
    wanted = MIN_GOODPUT * min(capacity, step["offered_rps"])
    answered_p99 = step["answered_p99_ms"]
    checks = {
        "goodput": step["goodput_rps"] >= wanted,
        "answered_p99": answered_p99 is not None and answered_p99 <= ANSWER_P99_MS,
        "refusals_fast": step["refused"] == 0 or step["refused_p99_ms"] <= REFUSAL_P99_MS,
        "refusals_retry_after": step["refused_without_retry_after"] == 0,
        "no_failures": step["failed"] == 0,
    }
    if step["multiple"] == RECOVERY:
        first = step["answered_first_second_p99_ms"]
        checks["first_second_p99"] = first is not None and first <= ANSWER_P99_MS
    return checks


def closed_loop(server: Server, body: Path) -> dict:
    """The closed-loop figures of a running server, warmed first, with its CPU per answer."""
    quick = PROFILES["quick"]
    load(server, body, "concurrency", CONCURRENCY, quick.closed_seconds)  # warm
    cpu_before = server.cpu_seconds()
    closed = load(server, body, "concurrency", CONCURRENCY, quick.closed_seconds)
    spent = server.cpu_seconds() - cpu_before
    return closed | {
        "capacity_rps": closed["answered"] / quick.closed_seconds,
        "server_cpu_us_per_answer": 1e6 * spent / max(closed["answered"], 1),
    }


def overload(server: Server, body: Path, seconds: float, capacity: float) -> dict:
    """The steps, on a running server, from the capacity C."""
    closed = closed_loop(server, body)  # warmed as C's side was; its own figures, for the record
    steps = []
    for multiple in (*MULTIPLES, RECOVERY):
        rate = round(multiple * capacity, 1)
        cpu_before, started = server.cpu_seconds(), time.perf_counter()
        step = load(server, body, "rate", rate, seconds, ["--pool", str(POOL)])
        busy = (server.cpu_seconds() - cpu_before) / (time.perf_counter() - started)
        step |= {
            "server_core_share": busy,  # of the step, its drain and the generator's start
            "multiple": multiple,
            "offered_rps": rate,
            "goodput_rps": step["answered"] / seconds,
            "goodput_within_50ms_rps": step["answered_within_50ms"] / seconds,
        }
        step["passes"] = passes(step, capacity)
        steps.append(step)
        print(f"  {server.name} {multiple} C = {rate} req/s: {_line(step)}", flush=True)
    return {"capacity_rps": capacity, "closed_loop": closed, "steps": steps}


CAPACITY_SIDE = "bento_capacity"  # this checkout with no admission: nothing refused
REFUSING_SIDE = "bento_refusing"  # this checkout refusing every scoring request
REFUSAL_CONCURRENCY = 64


def refusal_cost(scratch: Path, tag: str, request_bodies: dict, sizes: tuple[int, ...]) -> dict:
    """What a refusal costs the server's core: this checkout with a target of 1 µs, so every
    scoring request is refused (as a request that already waited past the target), loaded in a
    closed loop; the server's CPU seconds per refusal, against its CPU per answer at C."""
    server = servers(["bento"], scratch, tag)[0]
    server.name = REFUSING_SIDE
    server.env["FRAUD_SERVING__ADMISSION_TARGET_MS"] = "0.001"
    server.start(scratch / f"{server.name}.log")
    found = {}
    try:
        for size in sizes:
            body = request_bodies[("rows", size)]
            load(server, body, "concurrency", REFUSAL_CONCURRENCY, 2)  # warm
            cpu_before = server.cpu_seconds()
            closed = load(server, body, "concurrency", REFUSAL_CONCURRENCY, 5)
            cpu = server.cpu_seconds() - cpu_before
            found[str(size)] = closed | {
                "refusals_per_s": closed["refused"] / 5,
                "server_cpu_us_per_refusal": 1e6 * cpu / max(closed["refused"], 1),
            }
    finally:
        server.stop()
    return found


def capacities(scratch: Path, tag: str, request_bodies: dict, sizes: tuple[int, ...]) -> dict:
    """C per size: this checkout's closed-loop rate with admission off, so that every side is
    offered the same steps and C is what the server answers when it refuses nothing (a closed
    loop of 32 connections over a short queue target would count refusals against it)."""
    server = servers(["bento"], scratch, tag)[0]
    server.name = CAPACITY_SIDE
    server.env["FRAUD_SERVING__ADMISSION_TARGET_MS"] = "0"
    server.start(scratch / f"{server.name}.log")
    try:
        found = {}
        for size in sizes:
            found[size] = closed_loop(server, request_bodies[("rows", size)])
        return found
    finally:
        server.stop()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _line(step: dict) -> str:
    failed = [name for name, ok in step["passes"].items() if not ok]
    return (
        f"goodput {step['goodput_rps']:.0f}/s, {step['answered']} answered (p99"
        f" {_ms(step['answered_p99_ms'])} ms), {step['refused']} refused (p99"
        f" {_ms(step['refused_p99_ms'])} ms), {step['failed']} failed"
        + (f"; fails {', '.join(failed)}" if failed else "")
    )


def table(results: dict) -> str:
    lines = [
        "\nOverload (/predict; C = closed-loop capacity with no admission, 32 connections; "
        "open-loop steps back to "
        f"back, the last right after 4 C, from a pool of {POOL} connections; latency from each "
        "request's scheduled time)\n",
        "| server | rows | C req/s | offered | goodput req/s (% of C) | of which within 50 ms "
        "| answered p99 ms "
        "| first-second p99 ms | refused (p99 ms) | failed | passes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, sizes in results.items():
        for size, found in sizes.items():
            capacity = found["capacity_rps"]
            for step in found["steps"]:
                failed = [check for check, ok in step["passes"].items() if not ok]
                lines.append(
                    f"| {name} | {size} | {capacity:.0f} | {step['multiple']:g} C "
                    f"({step['offered_rps']:.0f}/s) | {step['goodput_rps']:.0f} "
                    f"({100 * step['goodput_rps'] / capacity:.0f}%) "
                    f"| {step.get('goodput_within_50ms_rps', 0):.0f} "
                    f"| {_ms(step['answered_p99_ms'])} "
                    f"| {_ms(step['answered_first_second_p99_ms'])} "
                    f"| {step['refused']} ({_ms(step['refused_p99_ms'])}) | {step['failed']} "
                    f"| {'yes' if not failed else 'no: ' + ', '.join(failed)} |"
                )
    return "\n".join(lines) + "\n"


def run(
    names: list[str],
    scratch: Path,
    tag: str,
    seconds: float,
    baseline: Path | None,
    targets: list[str],
    sizes: tuple[int, ...],
) -> tuple[dict, dict]:
    """C per size, and every side's steps."""
    request_bodies = bodies(scratch, sizes)
    measured = capacities(scratch, tag, request_bodies, sizes)
    for size, closed in measured.items():
        print(f"C at {size} a request: {closed['capacity_rps']:.0f} req/s", flush=True)
    results: dict = {}
    sides = []
    for server in servers(names, scratch, tag, baseline=baseline):
        if server.name == "bento" and targets:
            for target in targets:  # this checkout at each admission target
                side = servers(["bento"], scratch, tag)[0]
                side.name = f"bento_target_{target}ms"
                side.env["FRAUD_SERVING__ADMISSION_TARGET_MS"] = target
                sides.append(side)
        else:
            sides.append(server)
    for server in sides:
        server.start(scratch / f"{server.name}-overload.log")
        try:
            results[server.name] = {
                str(size): overload(
                    server,
                    request_bodies[(server.body_kind, size)],
                    seconds,
                    measured[size]["capacity_rps"],
                )
                for size in sizes
            }
        finally:
            server.stop()
    return {str(size): closed for size, closed in measured.items()}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench-overload")
    parser.add_argument("--seconds", type=float, default=10.0, help="each open-loop step")
    parser.add_argument("--baseline", help="a commit to run the same steps on, beside this one")
    parser.add_argument("--scratch", type=Path)
    parser.add_argument(
        "--targets",
        default="",
        help="admission targets in ms to run this checkout at, comma-separated (default: the "
        "setting's default only)",
    )
    parser.add_argument("--sizes", default="1,100", help="transactions a request")
    parser.add_argument(
        "--refusal-cost-only",
        action="store_true",
        help="measure only what a refusal costs the server (refusal_cost.json)",
    )
    args = parser.parse_args()
    tag = pinned_tag(load_settings(), REPO_ROOT / "service.py")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="fraud-overload-"))
    scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    names = ["bento"]
    baseline = None
    if args.baseline:
        baseline = baseline_checkout(args.baseline, scratch / "baseline")
        names.append("bento_baseline")
    machine = {
        "pinning": PINNING,
        "date": time.strftime("%Y-%m-%d"),
        "model": tag,
        "baseline": args.baseline,
        "seconds_a_step": args.seconds,
    }
    print(json.dumps(machine), flush=True)
    targets = [t for t in args.targets.split(",") if t]
    sizes = tuple(int(size) for size in args.sizes.split(","))
    if args.refusal_cost_only:
        request_bodies = bodies(scratch, sizes)
        found = refusal_cost(scratch, tag, request_bodies, sizes)
        (args.out / "refusal_cost.json").write_text(json.dumps(found, indent=2))
        for size, cost in found.items():
            print(
                f"{size} a request: {cost['refusals_per_s']:.0f} refusals/s, "
                f"{cost['server_cpu_us_per_refusal']:.0f} µs of server CPU each"
            )
        return
    capacity, results = run(names, scratch, tag, args.seconds, baseline, targets, sizes)
    report = {"machine": machine, "capacity": capacity, "results": results}
    (args.out / "overload.json").write_text(json.dumps(report, indent=2))
    markdown = table(results)
    (args.out / "overload.md").write_text(markdown)
    print(markdown)
    print(f"wrote {args.out}/overload.json, overload.md")


if __name__ == "__main__":
    main()
