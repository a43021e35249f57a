"""Load generator: open loop at a fixed arrival rate, or closed loop at a fixed concurrency, over
HTTP/1.1 keep-alive connections or gRPC (OIP ModelInfer).

Open loop sends request i at start + i/rate whatever the server does, so queueing shows in the
tail (no coordinated omission): a request that finds no idle connection waits for one (or a new
one is opened, up to MAX_CONNECTIONS), and its latency counts from its scheduled time. A request
sent at once counts from the moment it is sent: the generator's own timer lateness (uvloop's
timers have 1 ms resolution) is not the server's. HTTP is spoken on raw asyncio protocols over
uvloop with the request bytes made once, so one core drives about 19,000 requests a second
(aiohttp, used before, spent 0.2-0.6 ms of CPU a request). Prints one JSON document, with the
generator's own CPU time per request so its cost can be checked, and the p99 of its worst second.

    python loadgen.py URL BODY_FILE (--rate R | --concurrency C) --seconds S [--grpc | --lines]
        [--header 'Name: value' ...] [--request-ids]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import time
from collections import deque
from urllib.parse import urlsplit

import numpy as np
import uvloop

TIMEOUT_S = 5.0
TICK_S = 0.001
MAX_CONNECTIONS = 1024
# A request's outcome: its HTTP status, or one of these.
FAILED = 0  # no answer: the connection failed or closed, or the timeout passed
REFUSED = 503  # gRPC: RESOURCE_EXHAUSTED or UNAVAILABLE
REFUSED_BARE = -503  # a 503 without Retry-After
USEFUL_MS = 50.0  # an answer later than this came after a payment's client gave up on it


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, on_done):
        self._on_done = on_done
        self._buffer = bytearray()
        self._started = 0.0
        self.transport = None
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, request: bytes, started: float) -> None:
        self._started = started
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        length = 0
        length_at = head.find(b"content-length:")
        if length_at >= 0:
            line_end = head.find(b"\r\n", length_at)
            length = int(head[length_at + 15 : line_end if line_end >= 0 else len(head)])
        if len(self._buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        if status == REFUSED and b"\r\nretry-after:" not in head:
            status = REFUSED_BARE
        del self._buffer[: end + 4 + length]
        self._on_done(self, self._started, status)

    def connection_lost(self, exc) -> None:
        self.lost = True
        if self._started:
            self._on_done(self, self._started, FAILED, lost=True)


class HttpLoad:
    def __init__(
        self,
        url: str,
        bodies: list[bytes],
        headers: list[str] = (),
        request_ids: bool = False,
        content_type: str = "application/json",
        max_connections: int = MAX_CONNECTIONS,
    ):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        extra = "".join(f"{header}\r\n" for header in headers)
        heads = [
            (
                f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{extra}"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            ).encode()
            for body in bodies
        ]
        # A request's bytes are made once; with request ids, only its X-Request-ID line is
        # added as it is sent.
        self._request_ids = request_ids
        self._parts = [(head, b"\r\n" + body) for head, body in zip(heads, bodies, strict=True)]
        self.requests = [head + rest for head, rest in self._parts]
        self._sent = 0
        # Unique across the run's load generators too: the prediction log keeps a retried
        # request (same id) once, so ids reused by the next step would log nothing new.
        self._id_prefix = b"loadgen-%s-" % secrets.token_hex(4).encode()
        self.results: list[tuple[float, float, int]] = []  # (scheduled, latency, status)
        self._idle: deque[_Connection] = deque()
        self._waiting: deque[float] = deque()
        self._open = 0
        self._opening = 0
        self._max_connections = max_connections
        self.closed_until: float | None = None  # closed loop: each answer sends the next

    def _done(self, connection: _Connection, started: float, status: int, lost=False) -> None:
        now = time.perf_counter()
        self.results.append((started, now - started, status))
        connection._started = 0.0
        if lost:
            self._open -= 1
            return
        self._use(connection)

    @property
    def request(self) -> bytes:
        """The next request: the bodies in turn (one body: always the same), each with an
        X-Request-ID of its own when asked."""
        self._sent += 1
        if self._request_ids:
            head, rest = self._parts[self._sent % len(self._parts)]
            return b"%sX-Request-ID: %s%d\r\n%s" % (head, self._id_prefix, self._sent, rest)
        return self.requests[self._sent % len(self.requests)]

    def _use(self, connection: _Connection) -> None:
        if self._waiting:
            connection.send(self.request, self._waiting.popleft())
        elif self.closed_until is not None and time.perf_counter() < self.closed_until:
            connection.send(self.request, time.perf_counter())
        else:
            self._idle.append(connection)

    def submit(self, scheduled: float) -> None:
        while self._idle and self._idle[0].lost:  # closed by the server while idle
            self._idle.popleft()
            self._open -= 1
        if self._idle:  # sent now: the generator's own timer lateness (<= 1 ms) is not counted
            self._idle.popleft().send(self.request, time.perf_counter())
            return
        self._waiting.append(scheduled)
        opened = self._open + self._opening
        if opened < self._max_connections and len(self._waiting) > self._opening:
            asyncio.get_running_loop().create_task(self._connect_and_use())

    async def _connect_and_use(self) -> None:
        loop = asyncio.get_running_loop()
        self._opening += 1
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._done), self.host, self.port
            )
        except OSError:
            if self._waiting:
                self.results.append((self._waiting.popleft(), 0.0, FAILED))
            return
        finally:
            self._opening -= 1
        self._open += 1
        self._use(connection)

    def outstanding(self) -> int:
        return len(self._waiting) + (self._open - len(self._idle))

    async def pool(self) -> None:
        """All the connections it may use, opened before the first request (a client's pool):
        a step starts with no connection storm, which the server would pay for in its first
        second."""
        loop = asyncio.get_running_loop()
        for _ in range(self._max_connections):
            _, connection = await loop.create_connection(
                lambda: _Connection(self._done), self.host, self.port
            )
            self._open += 1
            self._idle.append(connection)


class GrpcLoad:
    """ModelInfer calls with the serialized request made once (no per-call protobuf work)."""

    def __init__(self, target: str, body: bytes):
        import grpc

        self.channel = grpc.aio.insecure_channel(target)
        self.call = self.channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=None,
        )
        self.body = body
        self.results: list[tuple[float, float, int]] = []
        self._in_flight = 0
        self.closed_until: float | None = None

    def submit(self, scheduled: float) -> None:
        self._in_flight += 1
        asyncio.get_running_loop().create_task(self._one(scheduled))

    async def _one(self, scheduled: float) -> None:
        import grpc

        refused = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
        try:
            await self.call(self.body, timeout=TIMEOUT_S)
            status = 200
        except grpc.aio.AioRpcError as error:
            status = REFUSED if error.code() in refused else FAILED
        except Exception:  # noqa: BLE001 - any failed call is an error of the run
            status = FAILED
        self.results.append((scheduled, time.perf_counter() - scheduled, status))
        self._in_flight -= 1
        if self.closed_until is not None and time.perf_counter() < self.closed_until:
            self.submit(time.perf_counter())

    def outstanding(self) -> int:
        return self._in_flight


async def open_loop(load, rate: float, seconds: float) -> None:
    """Every request due is sent, then the loop sleeps until the next one is, for 1 ms at least:
    shorter sleeps made the generator spin and fall behind its own schedule above ~4,000 req/s
    (uvloop's timers have 1 ms resolution)."""
    start = time.perf_counter()
    total = int(rate * seconds)
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:
            load.submit(start + sent / rate)
            sent += 1
        await asyncio.sleep(max(TICK_S, start + sent / rate - time.perf_counter()))
    await _drain(load)


async def closed_loop(load, concurrency: int, seconds: float) -> None:
    load.closed_until = time.perf_counter() + seconds
    for _ in range(concurrency):
        load.submit(time.perf_counter())
    await asyncio.sleep(seconds)
    await _drain(load)


async def _drain(load) -> None:
    deadline = time.perf_counter() + TIMEOUT_S
    while load.outstanding() and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    for _ in range(load.outstanding()):  # never answered within the timeout
        load.results.append((0.0, TIMEOUT_S, FAILED))


def summarise(results: list, seconds: float, cpu_s: float) -> dict:
    """Every request's figures, then the answered (200) and the refused (503) apart: under
    overload a fast refusal is the point, and its latency is not the answers'."""
    table = np.array(results, dtype=np.float64).reshape(-1, 3)
    scheduled, latencies, status = table[:, 0], table[:, 1] * 1000, table[:, 2].astype(int)
    ok, refused = status == 200, (status == REFUSED) | (status == REFUSED_BARE)
    errors = int((~ok).sum())
    p50, p95, p99, top = (
        np.percentile(latencies, [50, 95, 99, 100]) if len(latencies) else (0, 0, 0, 0)
    )
    timed = scheduled > 0  # requests never answered have no schedule left
    second = (scheduled[timed] - scheduled[timed].min()).astype(int) if timed.any() else []
    worst = [np.percentile(latencies[timed][second == s], 99) for s in np.unique(second)]
    answered = timed & ok
    first_second = answered & (scheduled - scheduled[timed].min() < 1) if timed.any() else ok

    def p99_of(chosen) -> float | None:
        return float(np.percentile(latencies[chosen], 99)) if chosen.any() else None

    return {
        "requests": len(results),
        "errors": errors,
        "throughput_rps": (len(results) - errors) / seconds,
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(top),
        "worst_second_p99_ms": float(max(worst, default=0.0)),
        "answered": int(ok.sum()),
        "answered_within_50ms": int((ok & (latencies <= USEFUL_MS)).sum()),
        "answered_p99_ms": p99_of(ok),
        "answered_first_second_p99_ms": p99_of(first_second),
        "refused": int(refused.sum()),
        "refused_without_retry_after": int((status == REFUSED_BARE).sum()),
        "refused_p99_ms": p99_of(refused),
        "failed": int((~ok & ~refused).sum()),  # no answer, or another status
        "loadgen_cpu_ms_per_request": 1000 * cpu_s / max(len(results), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="http://host:port/path, or host:port with --grpc")
    parser.add_argument("body_file")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float)
    mode.add_argument("--concurrency", type=int)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--grpc", action="store_true", help="BODY_FILE is a ModelInferRequest")
    parser.add_argument(
        "--lines", action="store_true", help="BODY_FILE holds one JSON body a line, sent in turn"
    )
    parser.add_argument(
        "--header", action="append", default=[], help="'Name: value', sent with every request"
    )
    parser.add_argument(
        "--request-ids", action="store_true", help="a distinct X-Request-ID on every request"
    )
    parser.add_argument(
        "--pool",
        type=int,
        help="open this many connections before the first request, and use no more (default: "
        f"opened as needed, up to {MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--oip-binary",
        action="store_true",
        help="BODY_FILE is an OIP JSON header followed by raw tensor bytes",
    )
    args = parser.parse_args()
    with open(args.body_file, "rb") as handle:
        body = handle.read()
    bodies = body.splitlines() if args.lines else [body]
    content_type = "application/json"
    if args.oip_binary:  # the JSON header ends where the first JSON value does
        _, header_length = json.JSONDecoder().raw_decode(body.decode("latin-1"))
        args.header.append(f"Inference-Header-Content-Length: {header_length}")
        content_type = "application/octet-stream"

    async def run() -> list:
        if args.grpc:
            load = GrpcLoad(args.url, body)
        else:
            limit = args.pool or MAX_CONNECTIONS
            load = HttpLoad(args.url, bodies, args.header, args.request_ids, content_type, limit)
            if args.pool:
                await load.pool()
        if args.rate:
            await open_loop(load, args.rate, args.seconds)
        else:
            await closed_loop(load, args.concurrency, args.seconds)
        return load.results

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    results = uvloop.run(run())
    elapsed = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    print(json.dumps(summarise(results, elapsed, cpu_s)))


if __name__ == "__main__":
    main()
