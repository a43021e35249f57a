"""Domain errors of the serving path, mapped to HTTP 4xx and gRPC INVALID_ARGUMENT by callers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    field: str
    row: int | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}, " if self.row is not None else ""
        return f"{where}field '{self.field}': {self.reason}"


class InvalidInput(ValueError):
    """The request cannot be scored; `violations` names each bad field and row."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        shown = "; ".join(map(str, violations[:10]))
        more = f" (and {len(violations) - 10} more)" if len(violations) > 10 else ""
        super().__init__(shown + more)
