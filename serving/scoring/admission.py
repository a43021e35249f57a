"""Admission: whether a scoring request is taken on, decided at the door before its body is read.

A worker is one event loop on one core. Offered more than that core scores, every request it
takes on makes the ones behind it later: before this, at 1.2 times capacity answers (and
refusals) took seconds, and the requests' clients had given up long before. So the door admits a
request only while the worker's queue is short, and measures that queue directly: how long the
oldest request it admitted and has not answered has waited, how long this one has waited since
its head was read, and how late the event loop runs. Over the latency target (`target_ms`), or
with the bytes in progress over a limit that follows the answers' latency, the request is
refused at once (503 with Retry-After, gRPC RESOURCE_EXHAUSTED), before a byte of its body is
decoded or scored, and the core keeps serving what it admitted. No admitted request waits behind
more than about a target's worth of work, so the queue holds no stale requests and drains within
a target of the load falling: recovery needs nothing to expire.

The same rule holds for every protocol of the worker (OIP and KServe over HTTP, /score, gRPC):
they share the worker's one Admission and its one queue. Refusals are counted per request like
every refusal (`fraud_requests_total{outcome="overloaded"}`) and logged as one summary line a
second, not one line each, when the worker can least afford it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

from serving.contract.refusals import Overloaded

logger = logging.getLogger("fraud_bento.admission")
SUMMARY_EVERY_S = 1.0


# The limit on the bytes of requests in progress: where it starts, and its bounds (below
# QUEUE_FLOOR requests in progress, a request is taken on however large).
FIRST_LIMIT_BYTES = 1 << 20
MIN_LIMIT_BYTES = 16 << 10
MAX_LIMIT_BYTES = 256 << 20
BACK_OFF = 0.9  # the limit's factor for each answer later than the target
# Requests in progress below which none is refused: with so few, a late one was kept waiting by
# the machine (another process on the core, a pause), not by a queue that refusing would cut.
# On a busy test machine, sequential requests and four clients were refused at 30 ms without it.
QUEUE_FLOOR = 8


class Ticket:
    """An admitted request, in progress until `done()`."""

    __slots__ = ("arrived", "size", "finished", "_admission")

    def __init__(self, admission: Admission, arrived: float, size: int):
        self._admission = admission
        self.arrived = arrived
        self.size = size
        self.finished = False

    def done(self) -> None:
        if not self.finished:
            self.finished = True
            self._admission._answered(self)


class Admission:
    """`admit(protocol, arrived, size)`: a Ticket to mark done when the request is answered, or
    Overloaded (raised, counted). The worker runs `summarise_periodically` for the log's
    summary line."""

    def __init__(
        self,
        target_ms: float,
        lateness: Callable[[float], float] = lambda now: 0.0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.target_s = target_ms / 1000 if target_ms > 0 else math.inf
        self._lateness = lateness  # the event loop's, at a time of `clock`
        self._clock = clock
        self._lock = threading.Lock()  # gRPC's pool threads admit too
        self._in_flight: deque[Ticket] = deque()  # in admission order: the oldest first
        self._in_flight_bytes = 0
        self._in_progress = 0  # admitted, not answered
        self.limit_bytes = FIRST_LIMIT_BYTES if target_ms > 0 else math.inf
        self._refused: Counter[str] = Counter()  # by protocol, since the last summary
        self._summarised = clock()
        self._longest_wait = 0.0  # of the refusals since the last summary
        self._reason = (
            f"the service is over its {target_ms:g} ms queue target "
            "(serving.admission_target_ms): retry shortly"
        )

    def admit(self, protocol: str, arrived: float | None = None, size: int = 0) -> Ticket:
        """A ticket for a request taken on; Overloaded (counted) when it is refused.
        `arrived`: when the request reached the server, if before now (its wait so far counts);
        `size`: its body's bytes, the measure of its work."""
        with self._lock:
            now = self._check(protocol, arrived, size)
            ticket = Ticket(self, now if arrived is None else arrived, size)
            self._in_flight.append(ticket)
            self._in_flight_bytes += size
            self._in_progress += 1
            return ticket

    def check(self, protocol: str, size: int = 0) -> None:
        """Overloaded (counted) when a request would be refused now; nothing is taken on (the
        HTTP protocol's early refusal: serving/http/early_refusal.py)."""
        with self._lock:
            self._check(protocol, None, size)

    def _check(self, protocol: str, arrived: float | None, size: int) -> float:
        """Refused, with at least QUEUE_FLOOR requests in progress, when a request would wait
        past the target: the oldest in progress, this one (since it arrived) or the event loop
        already has; or when its bytes would take those in progress past the limit."""
        now = self._clock()
        if self._in_progress < QUEUE_FLOOR:
            return now
        in_flight = self._in_flight
        while in_flight and in_flight[0].finished:
            in_flight.popleft()
        oldest = in_flight[0].arrived if in_flight else now
        if arrived is not None:
            oldest = min(oldest, arrived)
        waited = max(now - oldest, self._lateness(now))
        over = self._in_flight_bytes + size > self.limit_bytes
        if waited <= self.target_s and not over:
            return now
        self._refused[protocol] += 1
        self._longest_wait = max(self._longest_wait, waited)
        raise Overloaded(self._reason)

    def _answered(self, ticket: Ticket) -> None:
        """The limit follows the answers' latency against the target, additive increase and
        multiplicative decrease as adaptive concurrency limits do (Netflix's, Envoy's): a wave
        of requests read in one turn of the loop, each young when admitted, cannot all be taken
        on before the first of them has waited. In steady load the oldest-wait rule governs;
        the limit settles above it."""
        with self._lock:
            self._in_flight_bytes -= ticket.size
            self._in_progress -= 1
            if self._clock() - ticket.arrived <= self.target_s:
                self.limit_bytes = min(self.limit_bytes + ticket.size, MAX_LIMIT_BYTES)
            else:
                self.limit_bytes = max(self.limit_bytes * BACK_OFF, MIN_LIMIT_BYTES)

    def summarise(self) -> None:
        """The refusals since the last summary, in one line (none: no line)."""
        with self._lock:
            now, refused, longest = self._clock(), dict(self._refused), self._longest_wait
            self._refused.clear()
            self._longest_wait = 0.0
            since, self._summarised = self._summarised, now
        if refused:
            by_protocol = ", ".join(f"{p} {n}" for p, n in sorted(refused.items()))
            logger.warning(
                "overloaded: refused %d requests in the last %.1f s (%s); the oldest request "
                "in progress had waited up to %.0f ms, target %g ms",
                sum(refused.values()),
                now - since,
                by_protocol,
                longest * 1000,
                self.target_s * 1000,
            )

    async def summarise_periodically(self) -> None:
        while True:
            await asyncio.sleep(SUMMARY_EVERY_S)
            self.summarise()
