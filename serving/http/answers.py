"""HTTP answers: the one function that turns a refusal (a ServingError) into an answer and counts
it, and the ASGI and Starlette forms of an answer. The lean scoring path, the security checks,
the mounted routes and the typed endpoints all refuse through `refusal`; gRPC has its own
(`grpc_server.refuse`)."""

from __future__ import annotations

from http import HTTPStatus
from typing import NamedTuple

from starlette.responses import Response

from serving.contract.refusals import ServingError
from serving.protocols import codec
from serving.telemetry import traffic

JSON = b"application/json"
JSON_HEADERS = ((b"content-type", JSON),)


class Answer(NamedTuple):
    body: bytes
    status: int = 200
    headers: tuple[tuple[bytes, bytes], ...] = JSON_HEADERS


def refusal(error: ServingError, protocol: str) -> Answer:
    """The answer to a refused request, counted under `protocol` (a route's, serving/http/
    routes.py): its status, its headers and its JSON body."""
    count(error, protocol)
    return answer_of(error)


def count(error: ServingError, protocol: str) -> None:
    traffic.record_refusal(protocol, error.outcome, error.fields(), error.security)


def answer_of(error: ServingError) -> Answer:
    extra = tuple(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()
    )
    return Answer(codec.encode(error.payload()), error.status, JSON_HEADERS + extra)


def http11(answer: Answer) -> tuple[bytes, bytes]:
    """An answer as HTTP/1.1 bytes, in two parts to join around its request id (the early
    refusal writes them itself, made once: serving/http/early_refusal.py)."""
    status = HTTPStatus(answer.status)
    head = [b"HTTP/1.1 %d %s" % (status, status.phrase.encode())]
    head += [name + b": " + value for name, value in answer.headers]
    head += [b"content-length: %d" % len(answer.body), b"x-request-id: "]
    return b"\r\n".join(head), b"\r\n\r\n" + answer.body


async def send(send, answer: Answer) -> None:
    """An answer on an ASGI connection."""
    headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode())]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def response(answer: Answer) -> Response:
    """An answer as Starlette's response (the mounted routes, the typed endpoints)."""
    response = Response(answer.body, status_code=answer.status)
    response.raw_headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode())]
    return response
