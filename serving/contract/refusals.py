"""The refusals of the serving path. Each error carries its HTTP status, its headers, its body and
the outcome it is counted under; each transport turns them into an answer, and counts them, in one
function (serving/http/answers.py for HTTP, `grpc_server.refuse` for gRPC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNKNOWN_FIELD = "unknown_field"  # the counted name of any field the contract does not know


class ServingError(Exception):
    """A request that gets no score: `status` is its HTTP status, `payload()` its JSON body,
    `outcome` what it is counted as (`fraud_requests_total`), `fields()` the request fields it
    names (counted too)."""

    status = 500
    headers: dict[str, str] = {}
    outcome = "error"
    security = False  # a refusal of the security checks, counted by reason

    def __init_subclass__(cls, status: int | None = None, outcome: str | None = None, **kwargs):
        """`class Gone(ServingError, status=410, outcome="gone")`: a refusal's two facts on
        its one line."""
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if outcome is not None:
            cls.outcome = outcome

    def payload(self) -> dict[str, Any]:
        return {"error": str(self)}

    def fields(self) -> set[str]:
        return set()


class NotFound(ServingError, status=404, outcome="not_found"):
    pass


class Conflict(ServingError, status=409, outcome="conflict"):
    """The request is well formed but does not apply to the served model (HTTP 409)."""


class Unavailable(ServingError, status=503, outcome="unavailable"):
    """Try again later (HTTP 503 with Retry-After, gRPC UNAVAILABLE)."""

    headers = {"Retry-After": "1"}


class Overloaded(Unavailable, outcome="overloaded"):
    """Refused for want of capacity: the caller should retry (HTTP 503, gRPC
    RESOURCE_EXHAUSTED)."""


class Late(ServingError, outcome="timeout"):
    """The request's time limit passed: 408 while its body was still arriving, 504 after. The
    connection is closed: what is left of the body is not read."""

    headers = {"Connection": "close"}

    def __init__(self, timeout_s: float, body_done: bool):
        self.status = 504 if body_done else 408
        what = "processed" if body_done else "received"
        super().__init__(f"the request was not {what} within {timeout_s:g} s")


class Refused(ServingError):
    """A request the security checks turn away before anything reads it; the body carries no
    detail beyond the status. Counted by reason (`fraud_security_refusals_total`)."""

    security = True


class Unauthenticated(Refused, status=401, outcome="unauthenticated"):
    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self):
        super().__init__("unauthorized")


class RateLimited(Refused, status=429, outcome="rate_limited"):
    def __init__(self, wait_s: float):
        self.headers = {"Retry-After": str(max(1, int(wait_s + 0.999)))}
        super().__init__("too many requests")


class UnsupportedMediaType(Refused, status=415, outcome="media_type"):
    pass


class TooLarge(Refused, status=413, outcome="too_large"):
    def __init__(self, max_bytes: int):
        super().__init__(f"request body larger than {max_bytes} bytes")


@dataclass(frozen=True)
class Violation:
    field: str
    row: int | None
    reason: str
    location: tuple[str | int, ...] | None = None  # where the form put it, when not by field

    def __str__(self) -> str:
        where = f"row {self.row}, " if self.row is not None else ""
        return f"{where}field '{self.field}': {self.reason}"

    @property
    def loc(self) -> list[str | int]:
        if self.location is not None:
            return list(self.location)
        return [self.field] if self.row is None else [self.row, self.field]


class InvalidInput(ServingError, ValueError, status=400, outcome="invalid"):
    """The request cannot be scored; `violations` names each bad field and row."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        shown = "; ".join(map(str, violations[:10]))
        more = f" (and {len(violations) - 10} more)" if len(violations) > 10 else ""
        super().__init__(shown + more)

    def fields(self) -> set[str]:
        return {v.field for v in self.violations}

    def payload(self) -> dict[str, Any]:
        """`{"error": summary, "detail": [{"loc": [...], "msg": ..., "type": ...}]}`, the shape
        of BentoML's validation errors, so every form names its problems alike."""
        return {
            "error": str(self),
            "detail": [
                {"loc": v.loc, "msg": v.reason, "type": "value_error"} for v in self.violations
            ],
        }


# BentoML names the request model of every typed endpoint `Input`, and its 400 says so: the lean
# path's refusals carry the same title, so a body is refused in the same words on both paths.
REQUEST_MODEL_TITLE = "Input"


class InvalidBody(ServingError, ValueError, status=400, outcome="invalid"):
    """A body the documented request model refuses: pydantic's list of problems, as BentoML's
    typed endpoints answer it (`{"error": "N validation errors for Input", "detail": [...]}`)."""

    def __init__(self, error):  # a pydantic ValidationError
        self.error = error
        count = error.error_count()
        plural = "s" if count > 1 else ""
        super().__init__(f"{count} validation error{plural} for {REQUEST_MODEL_TITLE}")

    def payload(self) -> dict[str, Any]:
        return {
            "error": str(self),
            "detail": self.error.errors(include_context=False, include_input=False),
        }

    def fields(self) -> set[str]:
        return failed_fields(self.error)


def failed_fields(error) -> set[str]:
    """The fields a pydantic ValidationError names (the last name of each location), for the
    validation-failure counter."""
    fields = set()
    for detail in error.errors():
        if detail["type"] == "extra_forbidden":
            fields.add(UNKNOWN_FIELD)  # client-chosen names would explode label cardinality
        else:
            named = [part for part in detail["loc"] if isinstance(part, str)]
            fields.add(named[-1] if named else "row")
    return fields
