"""Load generator: open loop at a fixed arrival rate, or closed loop at a fixed concurrency.

Open loop sends request i at start + i/rate whatever the server does, and measures latency from
that scheduled time, so queueing shows in the tail (no coordinated omission). Prints one JSON
document, including the generator's own CPU time per request so its cost can be checked.

    python loadgen.py URL BODY_FILE (--rate R | --concurrency C) --seconds S
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp
import numpy as np

TIMEOUT_S = 5.0


async def _send(session, url: str, body: bytes, scheduled: float, results: list) -> None:
    try:
        async with session.post(url, data=body) as response:
            await response.read()
            ok = response.status == 200
    except (TimeoutError, aiohttp.ClientError):
        ok = False
    results.append((time.perf_counter() - scheduled, ok))


async def open_loop(url: str, body: bytes, rate: float, seconds: float) -> list:
    results: list = []
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as s:
        start = time.perf_counter()
        total = int(rate * seconds)
        tasks = []
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(s, url, body, scheduled, results)))
        await asyncio.gather(*tasks)
    return results


async def closed_loop(url: str, body: bytes, concurrency: int, seconds: float) -> list:
    results: list = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as s:
        end = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < end:
                await _send(s, url, body, time.perf_counter(), results)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def summarise(results: list, seconds: float, cpu_s: float) -> dict:
    latencies = np.array([latency for latency, _ in results]) * 1000
    errors = sum(1 for _, ok in results if not ok)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(latencies) else (0, 0, 0)
    return {
        "requests": len(results),
        "errors": errors,
        "throughput_rps": (len(results) - errors) / seconds,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "loadgen_cpu_ms_per_request": 1000 * cpu_s / max(len(results), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("body_file")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float)
    mode.add_argument("--concurrency", type=int)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    with open(args.body_file, "rb") as handle:
        body = handle.read()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if args.rate:
        results = asyncio.run(open_loop(args.url, body, args.rate, args.seconds))
    else:
        results = asyncio.run(closed_loop(args.url, body, args.concurrency, args.seconds))
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    print(json.dumps(summarise(results, elapsed, cpu_s)))


if __name__ == "__main__":
    main()
