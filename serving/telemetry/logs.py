"""Structured logs: one JSON object per line for the `fraud_bento` loggers.

Request lines carry the request id, model tag, protocol, rows, latency and outcome as fields;
feature values are never logged at INFO (only the names of invalid fields).
"""

from __future__ import annotations

import json
import logging
import sys
import time

import bentoml_internals

ROOT = "fraud_bento"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str) -> None:
    """JSON lines on stderr for every `fraud_bento.*` logger, at `level`."""
    logger = logging.getLogger(ROOT)
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False  # BentoML's root handlers would print each line a second time


class _ExpectedErrors(logging.Filter):
    """Drops the traceback BentoML logs for an expected refusal: bad input (counted in
    fraud_validation_failures_total) or load shedding (fraud_requests_total{outcome=overloaded}).
    Formatting a traceback per shed request would feed the overload it answers."""

    def __init__(self, expected: tuple[type[BaseException], ...]):
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, self.expected)


def quiet_expected_errors(expected: tuple[type[BaseException], ...]) -> None:
    logging.getLogger(bentoml_internals.REQUEST_ERRORS_LOGGER).addFilter(_ExpectedErrors(expected))
