"""The front door: the outermost ASGI layer of every HTTP request, and the lean scoring path.

BentoML lets a service add middlewares only inside its own stack, so `FrontDoor.install` runs there
and, when the application starts (the ASGI lifespan call), puts this door before the whole stack.
For every request it settles the request id (the caller's `X-Request-ID` when it is a sane token,
else a new one) and returns it on every answer. Scoring requests (POST /predict, /predict_columns,
/score, /score_columns, OIP infer and KServe V1 predict) are then answered in front of BentoML's
middlewares (traffic
metrics, tracing, access log, timeout, request context, typed-API machinery), which cost several
times the scoring itself on a one-transaction request (measured 3,400 req/s on one core behind
them, 5,600 in front); everything else goes down the stack as before.

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
from dataclasses import dataclass

import numpy as np

from serving.contract.errors import InvalidInput, ServingError
from serving.payments.payment_scoring import PaymentScoring
from serving.protocols import codec, kserve_v1, oip_json
from serving.scoring.scorer import Scorer, chosen_by_client, request_id_or_new
from serving.telemetry import traffic

logger = logging.getLogger("fraud_bento.fast_path")
PREDICT = "/predict"
PREDICT_COLUMNS = "/predict_columns"
SCORE = "/score"
SCORE_COLUMNS = "/score_columns"
JSON = b"application/json"
REQUEST_ID = "fraud_bento.request_id"  # the scope key: (request id, chosen by the caller)
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away before the answer
Layer = Callable[[Callable], Callable]


@dataclass
class ScoringEndpoints:
    """What scoring needs of a worker: its scorer, the body decoders and the raw-payment
    scoring. The lean path and the typed endpoints both call these."""

    scorer: Scorer
    rows: codec.RowsDecoder
    columns: codec.ColumnsDecoder
    instances: kserve_v1.V1Decoder
    payments: PaymentScoring

    async def predict(
        self, matrix: np.ndarray, ids, request_id: str, validated: bool, durable: bool = False
    ) -> bytes:
        decided = await self.scorer.decide(matrix, "http", request_id, ids, validated, durable)
        return codec.encode_predictions(request_id, ids, decided)

    async def predict_columns(self, body: bytes, request_id: str, durable: bool) -> bytes:
        parsed = self.columns.parse(body)
        return await self.predict_given_columns(
            parsed.columns, parsed.data, parsed.transaction_ids, request_id, durable
        )

    async def predict_given_columns(
        self, columns: list[str], data, ids, request_id: str, durable: bool
    ) -> bytes:
        """A columnar request: arranged in the model's order, its values checked, each
        problem located in the columnar body."""
        try:
            matrix, ids = self.columns.arrange(columns, data, ids)
        except InvalidInput as error:
            traffic.record_rejection("http", {v.field for v in error.violations})
            raise
        try:
            return await self.predict(matrix, ids, request_id, False, durable)
        except InvalidInput as error:
            raise codec.in_columns(error) from None

    async def predict_v1(self, name: str, body: bytes, request_id: str, durable: bool) -> bytes:
        """KServe's V1 protocol: instances as feature lists or as rows by name."""
        kserve_v1.check_model(self.scorer.model.name, name)
        matrix, ids = self.instances.decode(body)
        try:  # rows by name were held to the contract by their decoder; lists are checked here
            decided = await self.scorer.decide(
                matrix, "kserve_v1", request_id, ids, ids is not None, durable
            )
        except InvalidInput as error:
            raise kserve_v1.in_instances(error) from None
        return kserve_v1.encode(decided, ids)


def _oip_target(path: str) -> tuple[str, str | None] | None:
    """(name, version) of `/v2/models/{name}[/versions/{version}]/infer`, else None."""
    parts = path.split("/")
    if len(parts) == 5 and parts[4] == "infer":  # ['', 'v2', 'models', name, 'infer']
        return parts[3], None
    if len(parts) == 7 and parts[4] == "versions" and parts[6] == "infer":
        return parts[3], parts[5]
    return None


def _is_scoring(scope) -> bool:
    if scope["method"] != "POST":
        return False
    path = scope["path"]
    return (
        path in (PREDICT, PREDICT_COLUMNS, SCORE, SCORE_COLUMNS)
        or _oip_target(path) is not None
        or kserve_v1.target(path) is not None
    )


def _header(scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return None


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
        scoring = _LeanScoring(endpoints)
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
            elif scope["type"] == "http" and scope["path"] == "/metrics":
                traffic.TALLY.flush()  # this worker's latest counts, before it answers
            await app(scope, receive, send)

        return installer

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

        if self.lean and _is_scoring(scope):
            await self.scoring(scope, receive, send_with_id)
        else:
            await self.stack(scope, receive, send_with_id)


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
                traffic.TALLY.add_outcome("http", "timeout")
                late = 504 if body_done else 408
                what = "processed" if body_done else "received"
                message = f"the request was not {what} within {self.timeout_s:g} s"
                headers = [(b"content-type", JSON), (b"connection", b"close")]
                await _respond(send_status, late, codec.encode({"error": message}), headers)
        finally:
            traffic.TALLY.add_http(scope["path"], status, time.perf_counter() - started)


class _LeanScoring:
    """The lean handlers: body in, scores out, every refusal mapped to its status here."""

    def __init__(self, endpoints: Callable[[], ScoringEndpoints]):
        self._find_endpoints = endpoints  # the worker's, once BentoML has made the service
        self._endpoints: ScoringEndpoints | None = None

    def _found(self) -> ScoringEndpoints:
        self._endpoints = self._find_endpoints()
        return self._endpoints

    async def __call__(self, scope, receive, send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        path = scope["path"]
        endpoints = self._endpoints or self._found()
        request_id, durable = scope[REQUEST_ID]
        try:
            if path == PREDICT:
                matrix, ids = endpoints.rows.decode(body)
                payload = await endpoints.predict(matrix, ids, request_id, True, durable)
            elif path == PREDICT_COLUMNS:
                payload = await endpoints.predict_columns(body, request_id, durable)
            elif path == SCORE:
                payload = await endpoints.payments.score_body(body, request_id, durable)
            elif path == SCORE_COLUMNS:
                payload = await endpoints.payments.score_columns_body(body, request_id, durable)
            elif (name := kserve_v1.target(path)) is not None:
                payload = await endpoints.predict_v1(name, body, request_id, durable)
            else:
                reply = await oip_json.infer(
                    endpoints.scorer,
                    *_oip_target(path),
                    body,
                    _header(scope, b"inference-header-content-length"),
                    scope[REQUEST_ID],
                )
                await _respond_oip(send, reply)
                return
        except ServingError as error:
            extra = [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
            await _respond(
                send, error.status, codec.encode(error.payload()), [(b"content-type", JSON), *extra]
            )
            return
        except Exception:
            logger.exception("scoring failed on %s", path)
            traffic.TALLY.add_outcome("http", "error")
            await _respond(send, 500, codec.encode({"error": "internal error"}))
            return
        await _respond(send, 200, payload)


def access_log(app):
    """BentoML's access log line for each scoring request, configured as BentoML configures its
    own (`logging.access` in BentoML's configuration)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.server.http.access import AccessLogMiddleware

    config = BentoMLContainer.api_server_config.logging.access
    return AccessLogMiddleware(
        app,
        has_request_content_length=config.request_content_length.get(),
        has_request_content_type=config.request_content_type.get(),
        has_response_content_length=config.response_content_length.get(),
        has_response_content_type=config.response_content_type.get(),
    )


def tracing(app):
    """BentoML's OpenTelemetry span for each scoring request, with its tracer and request-id
    hook (so log lines carry the span's id, as on BentoML's routes)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.context import trace_context
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    def server_request_hook(span, _scope) -> None:
        if span.context is not None:
            trace_context.request_id = span.context.span_id

    return OpenTelemetryMiddleware(
        app,
        default_span_details=None,
        server_request_hook=server_request_hook,
        tracer_provider=BentoMLContainer.tracer_provider.get(),
    )


async def _read_body(receive) -> bytes | None:
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def _respond(send, status: int, payload: bytes, headers: list | None = None) -> None:
    headers = headers or [(b"content-type", JSON)]
    headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _respond_oip(send, reply: oip_json.Reply) -> None:
    if reply.json_length is None:
        await _respond(send, reply.status, reply.body)
        return
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(reply.json_length).encode()),
    ]
    await _respond(send, reply.status, reply.body, headers=headers)
