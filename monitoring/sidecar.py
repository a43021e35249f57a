"""The monitoring process of one API worker: request profiling, drift at window close and the
prediction log, away from the worker's GIL (a whylogs call holds it ~10 ms; SQLite inserts a few
microseconds a row). Started by `monitoring.client.MonitorClient` with one end of a socket pair;
it exits when the worker closes the socket or says so. The worker's first message is the
configuration and the model's reference profile.

    python -m monitoring.sidecar FD
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
from pathlib import Path

import numpy as np

from monitoring import channel
from monitoring import whylogs_adapter as profiles
from monitoring.drift import Thresholds
from monitoring.feedback import FeedbackStore, Label, ScoredRequest
from monitoring.prediction_log import IncompatibleLog, open_log
from monitoring.profiler import RequestProfiler

logger = logging.getLogger("fraud_bento.monitoring")


class Sidecar:
    def __init__(self, sock: socket.socket, config: channel.ProcessConfig, reference: bytes | None):
        self._sock = sock
        self._send_lock = threading.Lock()
        self._features = config.features
        self.profiler = RequestProfiler(
            reference=profiles.from_bytes(reference) if reference is not None else None,
            features=self._features,
            monitored=config.monitored,
            directory=Path(config.directory),
            window_s=config.window_s,
            thresholds=Thresholds(config.drift_p_value, config.drift_min_effect),
            max_queued_rows=config.max_queued_rows,
            max_rows_per_s=config.profile_max_rows_per_s,
            on_report=lambda report: self._send(channel.Drift(report.as_dict())),
            on_drop=lambda rows: self._send(channel.Counted("fraud_profiling_dropped_rows", rows)),
            on_profiled=lambda rows: self._send(channel.Counted("fraud_profiled_rows", rows)),
        )
        self._status_sent: dict | None = None
        self.feedback: FeedbackStore | None = None
        self.feedback = self._feedback_store(config)
        self.send_status()

    def _feedback_store(self, config: channel.ProcessConfig) -> FeedbackStore | None:
        path = Path(config.feedback_db)
        where = "at FRAUD_MONITORING__DATABASE_URL" if config.database_url else str(path)
        try:
            log = open_log(config.database_url, path)
            return FeedbackStore(
                log,
                model_tag=config.model_tag,
                window_days=config.realized_window_days,
                retention_days=config.prediction_retention_days,
                max_queued_rows=config.max_queued_rows,
                realized_refresh_s=config.realized_refresh_s,
                on_realized=lambda realized: self._send(channel.Realized(realized)),
                on_drop=lambda rows: self._send(
                    channel.Counted("fraud_prediction_log_dropped_rows", rows)
                ),
                on_written=lambda rows: self._send(
                    channel.Counted("fraud_prediction_log_rows", rows)
                ),
                on_state=lambda state: self.send_status(),
                challenger_tag=config.challenger_tag,
            )
        except (OSError, sqlite3.Error, IncompatibleLog) as error:
            logger.error("feedback unavailable: no prediction log %s: %s", where, error)
            return None

    def _send(self, message: channel.ToWorker) -> None:
        data = channel.frame(message)
        with self._send_lock, contextlib.suppress(OSError):  # the worker is gone: reads end
            self._sock.sendall(data)

    def send_status(self) -> None:
        status = channel.Status(
            profiling=self.profiler.available,
            feedback=self.feedback.state if self.feedback is not None else "unavailable",
            has_reference=self.profiler.has_reference,
            window_s=self.profiler.window_s,
        )
        if status != self._status_sent:
            self._status_sent = status
            self._send(status)

    def handle(self, message: channel.ToProcess) -> bool:
        """Apply one message; False when the worker asked to close."""
        match message:
            case channel.Scored():
                self._scored(message)
            case channel.Labels(call, labels):
                self._label(call, labels)
            case channel.FleetDrift(call):
                threading.Thread(target=self._fleet_drift, args=(call,), daemon=True).start()
            case channel.Close():
                return False
        return True

    def _scored(self, message: channel.Scored) -> None:
        matrix, scores, decisions = message.arrays(len(self._features))
        requests, ids = message.requests, message.transaction_ids
        profiled = self._profiled_rows(requests)
        if len(matrix):
            self.profiler.submit(matrix, scores[profiled])
        if self.feedback is not None:
            start = 0
            for request in requests:
                end = start + request.rows
                if request.request_id is not None:
                    self.feedback.record(
                        ScoredRequest(
                            request.request_id,
                            request.model_tag,
                            request.endpoint,
                            scores[start:end],
                            decisions[start:end],
                            ids[start:end],
                            request.scored_at,
                        )
                    )
                start = end
        self.send_status()

    @staticmethod
    def _profiled_rows(requests: list[channel.RequestSpan]) -> np.ndarray:
        """Which of the batch's scores belong to the rows of its matrix."""
        flags = np.array([request.profiled for request in requests], dtype=bool)
        return np.repeat(flags, [request.rows for request in requests])

    def _label(self, call: int, labels: list[Label]) -> None:
        if self.feedback is None:
            self._send(channel.LabelsDone(call, None, "feedback unavailable: no prediction log"))
            return

        def reply(done) -> None:
            error = done.exception()
            if error is not None:
                self._send(channel.LabelsDone(call, None, f"cannot record labels: {error}"))
            else:
                self._send(channel.LabelsDone(call, done.result(), None))

        self.feedback.submit_labels(labels).add_done_callback(reply)

    def _fleet_drift(self, call: int) -> None:
        try:
            report = self.profiler.fleet_report()
        except Exception as error:  # a damaged profile file of another replica, a lost mount
            logger.exception("fleet drift failed")
            self._send(channel.FleetDriftDone(call, None, f"fleet drift failed: {error}"))
            return
        self._send(channel.FleetDriftDone(call, report and report.as_dict(), None))

    def close(self) -> None:
        self.profiler.close()
        if self.feedback is not None:
            self.feedback.close()


def _messages(sock: socket.socket):
    stream = sock.makefile("rb")
    while True:
        header = stream.read(channel.HEADER.size)
        if len(header) < channel.HEADER.size:
            return
        (size,) = channel.HEADER.unpack(header)
        body = stream.read(size)
        if len(body) < size:
            return
        yield channel.to_process.decode(body)


def all_threads_at_idle_priority() -> None:
    """Every thread of this process at idle priority: the policy is per thread, and the imports
    above already started some (an allocator's background thread) that would keep theirs."""
    for thread in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setscheduler(int(thread), os.SCHED_IDLE, os.sched_param(0))


def main() -> None:
    # The worker decides when this process ends (its close message, or its socket closing):
    # a signal to the whole process group must not cut the last window or log batch short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Scoring first: on a shared core, a profiling or logging burst of this process at normal
    # priority took the CPU from the worker for 20-30 ms at a time (measured: event-loop stalls).
    # SCHED_IDLE runs it only when the core would otherwise idle; behind, it drops and counts.
    all_threads_at_idle_priority()
    sock = socket.socket(fileno=int(sys.argv[1]))
    messages = _messages(sock)
    first = next(messages, None)
    if not isinstance(first, channel.Start):
        return
    if first.version != channel.VERSION:
        sys.exit(
            f"monitoring process: channel version {first.version} from the worker, this "
            f"process speaks {channel.VERSION}: the worker and monitoring/ come from two releases"
        )
    config, reference = first.config, first.reference
    logging.basicConfig(
        stream=sys.stderr,
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s (monitoring process): %(message)s",
    )
    sidecar = Sidecar(sock, config, reference)
    try:
        for message in messages:
            if not sidecar.handle(message):
                break
    finally:
        sidecar.close()
        sock.close()


if __name__ == "__main__":
    main()
