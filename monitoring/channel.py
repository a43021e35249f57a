"""The messages between an API worker and its monitoring process, over one Unix socket.

Each message is a 4-byte big-endian length and a msgpack body: a list whose first item names the
kind. Scored batches carry their arrays as raw float32 bytes (one copy, no per-row objects).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import msgspec
import numpy as np

HEADER = struct.Struct(">I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
START = "start"
SCORED = "scored"
LABELS = "labels"
LABELS_DONE = "labels_done"
FLEET_DRIFT = "fleet_drift"
FLEET_DRIFT_DONE = "fleet_drift_done"
CLOSE = "close"
STATUS = "status"
DRIFT = "drift"
REALIZED = "realized"
DROPPED = "dropped"

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def frame(*message) -> bytes:
    body = _encoder.encode(list(message))
    return HEADER.pack(len(body)) + body


def parse(body: bytes) -> list:
    return _decoder.decode(body)


@dataclass
class ScoredBatch:
    """Scored requests gathered by the worker between two hand-offs, concatenated."""

    n_features: int
    matrices: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    decisions: list[np.ndarray] = field(default_factory=list)
    requests: list[tuple] = field(default_factory=list)  # (request_id, rows, tag, scored_at)
    transaction_ids: list[str | None] = field(default_factory=list)
    rows: int = 0

    def add(self, matrix, scores, decisions, request_id, model_tag, scored_at, ids) -> None:
        self.matrices.append(matrix)
        self.scores.append(scores)
        self.decisions.append(decisions)
        self.requests.append((request_id, len(scores), model_tag, scored_at))
        self.transaction_ids += ids if ids is not None else [None] * len(scores)
        self.rows += len(scores)

    def to_message(self) -> bytes:
        return frame(
            SCORED,
            np.concatenate(self.matrices).astype(np.float32, copy=False).tobytes(),
            np.concatenate(self.scores).astype(np.float32, copy=False).tobytes(),
            np.concatenate(self.decisions).astype(np.bool_, copy=False).tobytes(),
            self.requests,
            self.transaction_ids,
        )


def scored_arrays(message: list, n_features: int):
    """(matrix, scores, decisions, requests, transaction_ids) of a SCORED message."""
    _, matrix, scores, decisions, requests, ids = message
    return (
        np.frombuffer(matrix, dtype=np.float32).reshape(-1, n_features),
        np.frombuffer(scores, dtype=np.float32),
        np.frombuffer(decisions, dtype=np.bool_),
        requests,
        ids,
    )
