"""Admission: whether a scoring request is taken on, decided at the door before its body is read.

A worker is one event loop on one core. Offered more than that core scores, every request it
takes on makes the ones behind it later: before this, at 1.5 times capacity answers (and
refusals) took seconds, and the requests' clients had given up long before. So the door admits a
request only while the worker's queue is short, and measures that queue directly: the age of the
oldest request it admitted and has not answered yet. Under the latency target (`target_ms`) it
admits; over it, the request is refused at once (503 with Retry-After, gRPC RESOURCE_EXHAUSTED),
before a byte of its body is read, decoded or scored, so a refusal costs microseconds and the
core keeps serving what it admitted. No admitted request waits behind more than about a target's
worth of work, so the queue holds no stale requests and drains within a target of the load
falling: recovery needs nothing to expire.

The same signal holds for every protocol of the worker (OIP and KServe over HTTP, /score, gRPC):
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


class Ticket:
    """An admitted request, in flight until `done()`."""

    __slots__ = ("arrived", "finished")

    def __init__(self, arrived: float):
        self.arrived = arrived
        self.finished = False

    def done(self) -> None:
        self.finished = True


class Admission:
    """`admit(protocol)`: a Ticket to mark done when the request is answered, or Overloaded
    (raised) when the oldest admitted request in flight is older than the target. The worker
    runs `summarise_periodically` for the log's summary line."""

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
        self._refused: Counter[str] = Counter()  # by protocol, since the last summary
        self._summarised = clock()
        self._longest_wait = 0.0  # of the refusals since the last summary
        self._reason = (
            f"the service is over its {target_ms:g} ms queue target "
            "(serving.admission_target_ms): retry shortly"
        )

    def admit(self, protocol: str, arrived: float | None = None) -> Ticket:
        """A ticket for a request taken on; Overloaded (counted) when it is refused. `arrived`:
        when the request reached the server, if earlier than now (its wait so far counts)."""
        with self._lock:
            now = self._check(protocol, arrived)
            ticket = Ticket(now if arrived is None else arrived)
            self._in_flight.append(ticket)
            return ticket

    def check(self, protocol: str) -> None:
        """Overloaded (counted) when a request would be refused now; nothing is taken on (the
        HTTP protocol's early refusal: serving/http/early_refusal.py)."""
        with self._lock:
            self._check(protocol)

    def _check(self, protocol: str, arrived: float | None = None) -> float:
        now = self._clock()
        in_flight = self._in_flight
        while in_flight and in_flight[0].finished:
            in_flight.popleft()
        oldest = in_flight[0].arrived if in_flight else now
        if arrived is not None:
            oldest = min(oldest, arrived)
        waited = max(now - oldest, self._lateness(now))
        if waited <= self.target_s:
            return now
        self._refused[protocol] += 1
        self._longest_wait = max(self._longest_wait, waited)
        raise Overloaded(self._reason)

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
