"""The messages between an API worker and its monitoring process, over one Unix socket.

Each message is a 4-byte big-endian length and a msgpack body: one of the typed structs below,
tagged with its kind. The worker's first message, `Start`, carries the channel's `VERSION`, the
process's configuration and the model's reference profile; a process of another version refuses
it by name. Scored batches carry their arrays as raw float32 bytes (one copy, no per-row objects).

A counter the monitoring process keeps (rows it had to drop, say) travels as `Counted` with the
metric's name; the worker adds it to the Prometheus counter registered under that name
(serving/telemetry/metrics.py), so a new one takes its owner's `Counted` and one registration.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from monitoring.feedback import FeedbackResult, Label, RealizedPerformance

VERSION = 3
HEADER = struct.Struct(">I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ProcessConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What the monitoring process needs to know, from the worker's settings."""

    features: list[str]
    monitored: list[str]  # the features (and the score) whose drift is judged
    directory: str
    window_s: float
    drift_p_value: float
    drift_min_effect: float
    max_queued_rows: int
    profile_max_rows_per_s: float
    feedback_db: str
    database_url: str | None
    realized_refresh_s: float
    model_tag: str
    challenger_tag: str | None = None
    realized_window_days: float
    prediction_retention_days: float
    log_level: str


class RequestSpan(msgspec.Struct, array_like=True, frozen=True):
    """One request's rows in a scored batch; `profiled`: its feature rows are in the batch's
    matrix (a challenger's scores of rows the champion served come without them)."""

    request_id: str | None
    rows: int
    model_tag: str
    endpoint: str
    scored_at: float
    profiled: bool


# The worker to its monitoring process.
class Start(msgspec.Struct, tag=True):
    version: int
    config: ProcessConfig
    reference: bytes | None


class Scored(msgspec.Struct, tag=True):
    matrix: bytes  # the feature rows of the profiled requests only
    scores: bytes
    decisions: bytes
    requests: list[RequestSpan]
    transaction_ids: list[str | None]

    def arrays(self, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.frombuffer(self.matrix, dtype=np.float32).reshape(-1, n_features),
            np.frombuffer(self.scores, dtype=np.float32),
            np.frombuffer(self.decisions, dtype=np.bool_),
        )


class Labels(msgspec.Struct, tag=True):
    call: int
    labels: list[Label]


class FleetDrift(msgspec.Struct, tag=True):
    call: int


class Close(msgspec.Struct, tag=True):
    pass


# The monitoring process to its worker.
class Status(msgspec.Struct, tag=True):
    profiling: bool
    feedback: str
    has_reference: bool
    window_s: float


class Drift(msgspec.Struct, tag=True):
    report: dict[str, Any]


class Realized(msgspec.Struct, tag=True):
    realized: RealizedPerformance


class Counted(msgspec.Struct, tag=True):
    metric: str
    value: float


class LabelsDone(msgspec.Struct, tag=True):
    call: int
    result: FeedbackResult | None
    error: str | None


class FleetDriftDone(msgspec.Struct, tag=True):
    call: int
    report: dict[str, Any] | None
    error: str | None


ToProcess = Start | Scored | Labels | FleetDrift | Close
ToWorker = Status | Drift | Realized | Counted | LabelsDone | FleetDriftDone
_encoder = msgspec.msgpack.Encoder()
to_process = msgspec.msgpack.Decoder(ToProcess)
to_worker = msgspec.msgpack.Decoder(ToWorker)


def frame(message: msgspec.Struct) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


@dataclass
class ScoredBatch:
    """Scored requests gathered by the worker between two hand-offs, concatenated."""

    matrices: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    decisions: list[np.ndarray] = field(default_factory=list)
    requests: list[RequestSpan] = field(default_factory=list)
    transaction_ids: list[str | None] = field(default_factory=list)
    rows: int = 0

    def add(
        self, matrix, scores, decisions, request_id, model_tag, endpoint, scored_at, ids
    ) -> None:
        """One request; `matrix` None: not to be profiled."""
        if matrix is not None:
            self.matrices.append(matrix)
        self.scores.append(scores)
        self.decisions.append(decisions)
        self.requests.append(
            RequestSpan(request_id, len(scores), model_tag, endpoint, scored_at, matrix is not None)
        )
        self.transaction_ids += ids if ids is not None else [None] * len(scores)
        self.rows += len(scores)

    def add_unprofiled(self, scores, decisions, spans: list[RequestSpan], ids: list) -> None:
        """Several requests' scores at once, none of them profiled (`spans` in the rows' order,
        `ids` one a row)."""
        self.scores.append(scores)
        self.decisions.append(decisions)
        self.requests += spans
        self.transaction_ids += ids
        self.rows += len(scores)

    def to_message(self) -> bytes:
        return frame(
            Scored(
                b"".join(m.astype(np.float32, copy=False).tobytes() for m in self.matrices),
                np.concatenate(self.scores).astype(np.float32, copy=False).tobytes(),
                np.concatenate(self.decisions).astype(np.bool_, copy=False).tobytes(),
                self.requests,
                self.transaction_ids,
            )
        )
