"""The front door: the outermost ASGI layer of every HTTP request, and the lean scoring path.

BentoML lets a service add middlewares only inside its own stack, so `FrontDoor.install` runs there
and, when the application starts (the ASGI lifespan call), puts this door before the whole stack.
For every request it settles the request id (the caller's `X-Request-ID` when it is a sane token,
else a new one) and returns it on every answer. Scoring requests (a POST to a route of the route
table with a handler: serving/http/routes.py) are then answered in front of BentoML's
middlewares (traffic metrics, tracing, access log, timeout, request context, typed-API
machinery), which cost several times the scoring itself on a one-transaction request (measured
3,400 req/s on one core behind them, 5,600 in front); everything else goes down the stack.

What BentoML's stack gives every request, the scoring path keeps, in this order from outside:
request metrics for every answer, refusals included (BentoML's own `bentoml_service_request_*`
names, added up per batch; a client that went away is counted as 499, not as an error), a timeout
on the whole request, body included (`serving.request_timeout_s`: 408 while the body is still
arriving, 504 after), OpenTelemetry spans and BentoML's access log line when
`serving.trace_scoring` / `serving.access_log` turn them on, then the security checks. A body the
lean decoders refuse is answered here with every problem named (serving/protocols/codec.py). The
typed `@bentoml.api` endpoints stay the documented API (OpenAPI, BentoML's generated clients call
them by name and land here). `FRAUD_SERVING__FAST_PATH=false` sends scoring down the stack.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from serving.contract.refusals import Late, Overloaded, ServingError
from serving.http import answers, early_refusal, routes
from serving.http.endpoints import Call, ScoringEndpoints
from serving.protocols import codec
from serving.scoring.scorer import chosen_by_client, request_id_or_new
from serving.telemetry import traffic

logger = logging.getLogger("fraud_bento.fast_path")
REQUEST_ID = "fraud_bento.request_id"  # the scope key: (request id, chosen by the caller)
ROUTE = "fraud_bento.route"  # the scope key of a scoring request: (route, path parameters)
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away before the answer
Layer = Callable[[Callable], Callable]


def _header(scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return None


def _length(headers) -> int:
    """A request's Content-Length, the admission's measure of its work (0: not given)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


class FrontDoor:
    """Every HTTP request: its id on the answer; scoring to the lean path (when `lean`), the
    rest to BentoML's stack."""

    def __init__(
        self,
        stack,
        endpoints: Callable[[], ScoringEndpoints],
        lean: bool,
        timeout_s: float,
        layers: list[Layer],
    ):
        self.stack = stack
        self.lean = lean
        self._find_endpoints = endpoints  # the worker's, once BentoML has made the service
        self._endpoints: ScoringEndpoints | None = None
        # made once per protocol and refusal: the bytes before and after the request id
        self._early_answers: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        scoring = _LeanScoring(self.endpoints)
        for layer in layers:  # innermost first
            scoring = layer(scoring)
        self.scoring = _Measured(scoring, timeout_s)

    @classmethod
    def install(cls, app, **options):
        """The ASGI middleware BentoML adds to its stack: at start-up it puts the door in front
        of the whole stack; before this worker answers /metrics it flushes the metric tally."""

        async def installer(scope, receive, send) -> None:
            if scope["type"] == "lifespan":
                application = scope["app"]  # Starlette's application, its stack built by now
                if not isinstance(application.middleware_stack, cls):
                    application.middleware_stack = cls(application.middleware_stack, **options)
                if "state" in scope:  # uvicorn hands it to every connection's protocol
                    scope["state"][early_refusal.REFUSE] = application.middleware_stack.refuse_early
            elif scope["type"] == "http" and scope["path"] == "/metrics":
                traffic.TALLY.flush()  # this worker's latest counts, before it answers
            await app(scope, receive, send)

        return installer

    def endpoints(self) -> ScoringEndpoints:
        if self._endpoints is None:
            self._endpoints = self._find_endpoints()
        return self._endpoints

    def refuse_early(self, method: bytes, url: bytes, headers) -> bytes | None:
        """The answer to a scoring request the admission refuses now, as HTTP/1.1 bytes, for
        the HTTP protocol to write before any ASGI call; None: the request goes on (to
        `__call__`, which admits it or refuses it in turn)."""
        if self._endpoints is None:
            return None  # the worker is not found until the first scoring request
        path = url.partition(b"?")[0]
        if b"%" in path:
            return None  # percent-encoded: uvicorn decodes it for the route table
        found = routes.scoring(method.decode("latin-1"), path.decode("latin-1"))
        if found is None:
            return None
        started = time.perf_counter()
        protocol = found[0].protocol
        try:
            self._endpoints.admission.check(protocol, _length(headers))
        except Overloaded as error:
            given = next((value for name, value in headers if name == b"x-request-id"), None)
            request_id = request_id_or_new(given.decode("latin-1") if given else None)
            answers.count(error, protocol)
            key = (protocol, str(error))
            made = self._early_answers.get(key)
            if made is None:  # one refusal's answer, the same for every refusal under overload
                made = self._early_answers[key] = answers.http11(answers.answer_of(error))
            traffic.TALLY.add_http(
                path.decode("latin-1"), error.status, time.perf_counter() - started
            )
            return made[0] + request_id.encode() + made[1]
        return None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.stack(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = request_id_or_new(given)
        scope[REQUEST_ID] = (request_id, chosen_by_client(given))
        echo = (b"x-request-id", request_id.encode())

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append(echo)
                message = {**message, "headers": headers}
            await send(message)

        found = routes.scoring(scope["method"], scope["path"])
        if found is None:
            await self.stack(scope, receive, send_with_id)
            return
        try:  # before the body is read: a refusal costs its head's parse, not the request's work
            arrived = scope.get(early_refusal.ARRIVED)
            size = _length(scope["headers"])
            ticket = self.endpoints().admission.admit(found[0].protocol, arrived, size)
        except Overloaded as error:
            started = time.perf_counter()
            await answers.send(send_with_id, answers.refusal(error, found[0].protocol))
            traffic.TALLY.add_http(scope["path"], error.status, time.perf_counter() - started)
            return
        try:
            if self.lean:
                scope[ROUTE] = found
                await self.scoring(scope, receive, send_with_id)
            else:
                await self.stack(scope, receive, send_with_id)
        finally:
            ticket.done()


class _Measured:
    """Request metrics for every scoring answer, and the request's time limit."""

    def __init__(self, app, timeout_s: float):
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send) -> None:
        started = time.perf_counter()
        status = CLIENT_CLOSED  # unless an answer goes out
        body_done = False

        async def receive_tracked():
            nonlocal body_done
            message = await receive()
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s):
                await self.app(scope, receive_tracked, send_status)
        except TimeoutError:
            if status == CLIENT_CLOSED:  # nothing sent yet
                late = Late(self.timeout_s, body_done)
                await answers.send(send_status, answers.refusal(late, codec.PROTOCOL))
        finally:
            traffic.TALLY.add_http(scope["path"], status, time.perf_counter() - started)


class _LeanScoring:
    """The lean handlers: body in, answer out, found in the route table; a refusal answered by
    the one refusal function, under the route's protocol."""

    def __init__(self, endpoints: Callable[[], ScoringEndpoints]):
        self._endpoints = endpoints

    async def __call__(self, scope, receive, send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        route, params = scope[ROUTE]
        endpoints = self._endpoints()
        request_id, durable = scope[REQUEST_ID]
        header_length = _header(scope, b"inference-header-content-length") if route.binary else None
        call = Call(body, params, request_id, durable, header_length)
        try:
            answer = await getattr(endpoints, route.handler)(call)
        except ServingError as error:
            answer = answers.refusal(error, route.protocol)
        except Exception:
            logger.exception("scoring failed on %s", route.path)
            answer = answers.refusal(ServingError("internal error"), route.protocol)
        await answers.send(send, answer)


async def _read_body(receive) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)
