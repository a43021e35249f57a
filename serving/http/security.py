"""API keys, per-client rate limits and request size limits, for HTTP (an ASGI middleware in
front of every route) and gRPC (a server interceptor).

Keys come from the environment (`FRAUD_API_KEYS`, comma-separated) or a file of one key per line
(`FRAUD_SECURITY__API_KEYS_FILE`, e.g. a mounted Kubernetes Secret), never from the repository or
a config file. Only their SHA-256 digests are kept, compared in constant time against every key.
Refusals carry no detail beyond the status.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from dataclasses import dataclass

import grpc

from serving.contract.refusals import (
    RateLimited,
    Refused,
    TooLarge,
    Unauthenticated,
    UnsupportedMediaType,
)
from serving.http import answers, routes
from serving.protocols import grpc_server
from serving.protocols.oip import OIPError
from settings import SecurityConfig

KEYS_ENV = "FRAUD_API_KEYS"
TRANSPORT = "http"  # what HTTP's security refusals are counted under, whatever the route
_MALFORMED = object()
GRPC_PROBES = frozenset({"ServerLive", "ServerReady"})


class KeyConfigError(ValueError):
    pass


def load_keys(config: SecurityConfig) -> list[bytes]:
    """SHA-256 digests of the configured API keys; empty: authentication is off."""
    keys = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",")]
    if config.api_keys_file is not None:
        try:
            keys += [line.strip() for line in config.api_keys_file.read_text().splitlines()]
        except OSError as error:
            raise KeyConfigError(
                f"cannot read API keys file {config.api_keys_file}: {error}"
            ) from error
    keys = [key for key in keys if key and not key.startswith("#")]
    short = [key for key in keys if len(key) < 16]
    if short:
        raise KeyConfigError(f"{len(short)} API key(s) shorter than 16 characters")
    return [hashlib.sha256(key.encode()).digest() for key in keys]


class TokenBuckets:
    """One token bucket per client: `rate` requests a second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int, max_clients: int = 100_000):
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when the request may proceed, else the seconds until a token is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                if len(self._buckets) >= self.max_clients and client not in self._buckets:
                    self._buckets.clear()  # bounded memory under address churn
                self._buckets[client] = (tokens - 1, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.rate


@dataclass
class Guard:
    """The decisions shared by HTTP and gRPC."""

    key_digests: list[bytes]
    buckets: TokenBuckets | None

    @classmethod
    def from_config(cls, config: SecurityConfig) -> Guard:
        buckets = (
            TokenBuckets(config.rate_limit_per_s, config.rate_limit_burst)
            if config.rate_limit_per_s > 0
            else None
        )
        return cls(load_keys(config), buckets)

    def authenticate(self, presented: str | None) -> bool:
        if not self.key_digests:
            return True
        digest = hashlib.sha256((presented or "").encode()).digest()
        matched = False
        for key in self.key_digests:  # every key, whatever matched: no timing signal
            matched |= hmac.compare_digest(digest, key)
        return matched

    def client_of(self, presented: str | None, address: str) -> str:
        if self.key_digests and presented:
            return "key:" + hashlib.sha256(presented.encode()).hexdigest()[:16]
        return "addr:" + address

    def retry_after(self, client: str) -> float:
        return self.buckets.take(client) if self.buckets is not None else 0.0


def _presented_key(headers: dict[str, str]) -> str | None:
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _accepted_body(path: str, headers: dict[str, str]) -> bool:
    """Every POST route takes JSON, and the routes that take binary tensors (OIP infer, the
    binary data extension) also JSON followed by them; other bodies are refused before anything
    parses them."""
    content_type = headers.get("content-type")
    if content_type is None:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return True
    if media_type != "application/octet-stream" or "inference-header-content-length" not in headers:
        return False
    found = routes.find(path)
    return found is not None and found[0].binary


MEDIA_TYPES = (
    "Content-Type must be application/json (OIP infer also takes application/octet-stream with "
    "an Inference-Header-Content-Length header)"
)


class SecurityMiddleware:
    """ASGI middleware: 401 without a valid key, 429 past the client's rate, 415 for a body that
    is not JSON, 413 past the size."""

    def __init__(self, app, guard: Guard, max_body_bytes: int, metrics_open: bool):
        self.app = app
        self.guard = guard
        self.max_body_bytes = max_body_bytes
        self.open_paths = routes.OPEN_PATHS | ({routes.METRICS} if metrics_open else set())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._checked(scope, receive)
        except Refused as error:
            await answers.send(send, answers.refusal(error, TRANSPORT))
            return
        await self.app(scope, receive, send)

    async def _checked(self, scope, receive):
        """`receive` once the request passed every check (or one that replays a body read to
        bound its size), else Refused."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        presented = _presented_key(headers)
        if not self.guard.authenticate(presented):
            raise Unauthenticated()
        address = (scope.get("client") or ("unknown", 0))[0]
        wait = self.guard.retry_after(self.guard.client_of(presented, address))
        if wait > 0:
            raise RateLimited(wait)
        if scope["method"] == "POST" and not _accepted_body(scope["path"], headers):
            raise UnsupportedMediaType(MEDIA_TYPES)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body_bytes:
                raise TooLarge(self.max_body_bytes)
            return receive  # the HTTP server holds the body to its length
        body = await self._bounded_body(receive)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # a disconnect, after the body
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _bounded_body(self, receive) -> bytes:
        """A body sent without Content-Length, read up to the limit (TooLarge past it)."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_body_bytes:
                raise TooLarge(self.max_body_bytes)
            if not message.get("more_body", False):
                return b"".join(parts)


class GrpcGuard(grpc.ServerInterceptor):
    """UNAUTHENTICATED without a valid key (metadata `authorization: Bearer KEY` or `x-api-key`),
    RESOURCE_EXHAUSTED past the client's rate, INVALID_ARGUMENT for a message that does not
    decode; the health RPCs stay open."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method.rsplit("/", 1)[-1]
        handler = continuation(handler_call_details)
        if method in GRPC_PROBES or handler is None or handler.unary_unary is None:
            return handler
        metadata = {k.lower(): v for k, v in (handler_call_details.invocation_metadata or ())}
        presented = _presented_key(metadata)
        guard = self.guard
        parse = handler.request_deserializer

        def tolerant_parse(data: bytes):
            try:
                return parse(data)
            except Exception:  # any undecodable message: answered below, not an INTERNAL error
                return _MALFORMED

        def guarded(request, context):  # refuse raises: the call ends there
            if request is _MALFORMED:
                grpc_server.refuse(context, OIPError("malformed request message"))
            if not guard.authenticate(presented):
                grpc_server.refuse(context, Unauthenticated())
            client = guard.client_of(presented, context.peer().rsplit(":", 1)[0])
            wait = guard.retry_after(client)
            if wait > 0:
                grpc_server.refuse(context, RateLimited(wait))
            return handler.unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=tolerant_parse,
            response_serializer=handler.response_serializer,
        )
