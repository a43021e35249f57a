"""Domain errors of the serving path. Each carries its HTTP status; each transport maps them in
one place (the lean HTTP path, the OIP HTTP binding, gRPC's status codes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ServingError(Exception):
    """A request that gets no score: `status` is its HTTP status, `payload()` its JSON body."""

    status = 500
    headers: dict[str, str] = {}

    def payload(self) -> dict[str, Any]:
        return {"error": str(self)}


class NotFound(ServingError):
    status = 404


class Conflict(ServingError):
    """The request is well formed but does not apply to the served model (HTTP 409)."""

    status = 409


class Unavailable(ServingError):
    """Try again later (HTTP 503 with Retry-After, gRPC UNAVAILABLE)."""

    status = 503
    headers = {"Retry-After": "1"}


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


class InvalidInput(ServingError, ValueError):
    """The request cannot be scored; `violations` names each bad field and row."""

    status = 400

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        shown = "; ".join(map(str, violations[:10]))
        more = f" (and {len(violations) - 10} more)" if len(violations) > 10 else ""
        super().__init__(shown + more)

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


class InvalidBody(ServingError, ValueError):
    """A body the documented request model refuses: pydantic's list of problems, as BentoML's
    typed endpoints answer it (`{"error": "N validation errors for Input", "detail": [...]}`)."""

    status = 400

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
