"""Admission at the door: a scoring request is refused before its body is read while the worker's
queue is over its target, the queue's freshest requests go first, the worker takes requests on
again as soon as its queue is back under the target, and refusals are summarised once a second.
The front door and uvicorn's HTTP protocol are the real ones; the clock is the test's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from types import SimpleNamespace

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from serving.contract.refusals import Overloaded
from serving.http.early_refusal import ARRIVED, REFUSE, EarlyRefusalProtocol
from serving.http.fast_path import FrontDoor
from serving.scoring.admission import BACK_OFF, FIRST_LIMIT_BYTES, QUEUE_FLOOR, Admission
from serving.telemetry import metrics, traffic

TARGET_MS = 20


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _admission(clock: Clock, lateness=lambda now: 0.0) -> Admission:
    return Admission(TARGET_MS, lateness, clock)


def _queue(admission: Admission) -> list:
    """As many requests in progress as make a queue the admission acts on."""
    return [admission.admit("http") for _ in range(QUEUE_FLOOR)]


def test_refused_while_the_oldest_in_progress_is_over_the_target_and_taken_again_once_it_is_done():
    clock = Clock()
    admission = _admission(clock)
    queued = _queue(admission)
    clock.now += 0.015
    later = admission.admit("http")  # the oldest has waited 15 ms: under the target
    clock.now += 0.010
    with pytest.raises(Overloaded) as refused:  # 25 ms
        admission.admit("http")
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
    assert "serving.admission_target_ms" in str(refused.value)
    for ticket in queued:  # the oldest left: the one left has waited 10 ms
        ticket.done()
    admission.admit("http").done()
    later.done()
    clock.now += 60  # nothing in progress: whatever came before, the next one is taken on
    admission.admit("grpc").done()


def test_a_few_late_requests_are_not_a_queue():
    clock = Clock()
    admission = _admission(clock)
    for _ in range(QUEUE_FLOOR - 1):  # kept late by the machine, not queued behind each other
        admission.admit("http")
    clock.now += 1
    admission.admit("http", arrived=clock.now - 0.5)
    with pytest.raises(Overloaded):  # now there is a queue
        admission.admit("http")


def test_a_request_that_already_waited_past_the_target_is_refused_fresher_ones_go_first():
    clock = Clock()
    admission = _admission(clock)
    _queue(admission)
    with pytest.raises(Overloaded):
        admission.admit("http", arrived=clock.now - 0.021)  # read 21 ms ago
    admission.admit("http", arrived=clock.now - 0.002).done()


def test_an_event_loop_behind_by_more_than_the_target_refuses():
    clock = Clock()
    behind = {"s": 0.0}
    admission = _admission(clock, lambda now: behind["s"])
    _queue(admission)
    admission.admit("http").done()
    behind["s"] = 0.030
    with pytest.raises(Overloaded):
        admission.admit("http")
    behind["s"] = 0.0
    admission.admit("http").done()


def test_a_wave_read_in_one_turn_is_taken_on_up_to_a_limit_that_follows_the_answers_latency():
    clock = Clock()
    admission = _admission(clock)
    size = 100_000
    taken = []
    for _ in range(30):  # read in one turn of the loop: none has waited yet
        with contextlib.suppress(Overloaded):
            taken.append(admission.admit("http", arrived=clock.now, size=size))
    assert len(taken) == FIRST_LIMIT_BYTES // size
    first = admission.limit_bytes
    clock.now += 0.002  # answered well within the target: the limit grows
    for ticket in taken:
        ticket.done()
    grown = admission.limit_bytes
    assert grown == first + len(taken) * size
    late = admission.admit("http", size=size)
    clock.now += 0.080  # answered after the target: the limit backs off
    late.done()
    assert admission.limit_bytes == pytest.approx(grown * BACK_OFF)
    huge = admission.admit("http", size=100 * FIRST_LIMIT_BYTES)  # alone: taken on, any size
    huge.done()


def test_a_target_of_zero_takes_everything_on():
    clock = Clock()
    admission = Admission(0, clock=clock)
    admission.admit("http")
    clock.now += 3600
    admission.admit("http", arrived=clock.now - 60)


def test_refusals_are_summarised_in_one_line_a_second(caplog):
    clock = Clock()
    admission = _admission(clock)
    _queue(admission)  # never done: the queue stays over the target
    clock.now += 0.5
    with caplog.at_level(logging.WARNING, logger="fraud_bento.admission"):
        for protocol in ["http"] * 70 + ["grpc"] * 30:
            with pytest.raises(Overloaded):
                admission.admit(protocol)
        assert not caplog.records  # a refusal writes no line of its own
        admission.summarise()
        admission.summarise()  # nothing refused since: no line
    [line] = caplog.records
    message = line.getMessage()
    assert "refused 100 requests" in message and "grpc 30, http 70" in message
    assert "waited up to 500 ms" in message


async def _send_to(door: FrontDoor, body: bytes, request_id: str):
    """One POST /predict through the front door; what it sent and whether it read the body."""
    sent, read = [], []

    async def receive():
        read.append(True)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())],
    }
    await door(scope, receive, send)
    return sent, read


def _overloaded_count() -> float:
    traffic.TALLY.flush()
    return metrics.REQUESTS.labels(protocol="http", outcome="overloaded")._value.get()


def test_over_the_target_a_body_that_would_fail_validation_is_refused_as_overload_unread():
    clock = Clock()
    admission = _admission(clock)
    _queue(admission)  # in progress, and old by the time the request comes
    clock.now += 1
    # The scoring handlers are never reached: a body the door read and decoded would be a 400.
    door = FrontDoor(None, lambda: SimpleNamespace(admission=admission), True, 30.0, [])
    before = _overloaded_count()
    sent, read = asyncio.run(_send_to(door, b'{"transactions": [{"tx_amount": -1}]}', "overload-1"))
    assert not read
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503
    assert headers[b"retry-after"] == b"1" and headers[b"x-request-id"] == b"overload-1"
    assert "admission_target_ms" in json.loads(body["body"])["error"]
    assert _overloaded_count() == before + 1


class _Transport:
    """The socket's end of a connection: what the protocol wrote."""

    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name, default=None):
        return default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def _request(path: str, body: bytes, request_id: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    if request_id:
        head += f"X-Request-ID: {request_id}\r\n"
    return head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_the_http_protocol_answers_an_early_refusal_itself_and_the_connection_goes_on():
    clock = Clock()
    admission = _admission(clock)
    _queue(admission)
    clock.now += 1
    door = FrontDoor(None, lambda: SimpleNamespace(admission=admission), True, 30.0, [])
    door.endpoints()  # the worker found, as after its first scoring request
    reached: list[dict] = []

    async def app(scope, receive, send):  # what uvicorn calls for a request it lets through
        reached.append(scope)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async def run() -> bytes:
        config = Config(app=app, log_config=None, http=EarlyRefusalProtocol)
        config.load()
        protocol = config.http_protocol_class(
            config=config, server_state=ServerState(), app_state={REFUSE: door.refuse_early}
        )
        transport = _Transport()
        protocol.connection_made(transport)
        body = b'{"transactions": [{"tx_amount": -1}]}'
        # Refused, its body skipped; then, on the same connection, a route the admission does
        # not govern, let through.
        protocol.data_received(_request("/predict", body, "early-1") + _request("/explain", b"{}"))
        await asyncio.sleep(0.05)
        return bytes(transport.written)

    written = asyncio.run(run())
    refusal, _, rest = written.partition(b"HTTP/1.1 200")
    head, _, body = refusal.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable")
    assert b"retry-after: 1" in head and b"x-request-id: early-1" in head
    assert "admission_target_ms" in json.loads(body)["error"]
    assert rest.endswith(b"ok")
    [explain] = reached
    assert explain["path"] == "/explain" and ARRIVED in explain
