"""The worker's side of its monitoring process (monitoring/sidecar.py).

`record` only appends a scored request to the pending batch (no thread, no lock, no copy); the
batch is handed over in one message every `HAND_OFF_EVERY_S`, written without blocking by the
event loop, or at once for a request whose id the caller chose (it may retry after a lost answer,
so its log rows must not die with this worker). Past `max_queued_rows` rows waiting (in the
batch or in the socket's buffer) the rows are dropped and counted: monitoring never slows or
fails scoring. A monitoring process that dies is started again after `RESTART_AFTER_S`; what it
held is lost and its drops are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from monitoring import SCORE_COLUMN, channel
from monitoring.feedback import FeedbackResult, Label, RealizedPerformance
from settings import Settings

logger = logging.getLogger("fraud_bento.monitoring")
SOURCE_ROOT = Path(__file__).resolve().parents[1]
HAND_OFF_EVERY_S = 0.1
RESTART_AFTER_S = 1.0
START_TIMEOUT_S = 60.0
BYTES_PER_ROW = 128  # a rough bound of a row's share of a message, for the socket buffer


class MonitoringUnavailable(RuntimeError):
    pass


@dataclass
class Listeners:
    on_drift: Callable[[dict], None] = lambda report: None
    on_realized: Callable[[RealizedPerformance], None] = lambda realized: None
    on_count: Callable[[str, float], None] = lambda metric, value: None
    on_labels: Callable[[FeedbackResult], None] = lambda result: None


# What the worker counts itself: rows it could not hand to the process (so neither profiled nor
# logged). The process counts what it drops on its side (channel.Counted).
DROPPED_METRICS = ("fraud_profiling_dropped_rows", "fraud_prediction_log_dropped_rows")


def for_service(
    settings: Settings,
    features: list[str],
    model_tag: str,
    challenger_tag: str | None,
    reference: bytes | None,
    listeners: Listeners,
) -> MonitorClient:
    """A serving worker's monitoring process, as the settings configure it: profiling, drift
    and the prediction log of `model_tag` (and of its challenger)."""
    config = settings.monitoring
    directory = settings.monitoring_directory()
    process_config = channel.ProcessConfig(
        features=features,
        monitored=[f for f in [*features, SCORE_COLUMN] if f not in config.exclude_features],
        directory=str(directory),
        window_s=config.window_s,
        drift_p_value=config.drift_p_value,
        drift_min_effect=config.drift_min_effect,
        max_queued_rows=config.max_queued_rows,
        profile_max_rows_per_s=config.profile_max_rows_per_s,
        feedback_db=str(settings.feedback_db_path()),
        challenger_tag=challenger_tag,
        database_url=config.database_url,
        realized_refresh_s=config.realized_refresh_s,
        model_tag=model_tag,
        realized_window_days=config.realized_window_days,
        prediction_retention_days=config.prediction_retention_days,
        log_level=settings.serving.log_level,
    )
    return MonitorClient(
        process_config,
        reference,
        max_queued_rows=config.max_queued_rows,
        log_sample=config.log_sample,
        listeners=listeners,
    )


class MonitorClient:
    def __init__(
        self,
        config: channel.ProcessConfig,
        reference: bytes | None,
        *,
        max_queued_rows: int,
        listeners: Listeners,
        log_sample: float = 1.0,
    ):
        self._config = config
        self._reference = reference
        self._max_rows = max_queued_rows
        self._log_below = log_sample * 2**32  # request ids hashing below it are logged
        self._listeners = listeners
        self._pending = channel.ScoredBatch()
        self._process: subprocess.Popen | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._calls: dict[int, asyncio.Future] = {}
        self._call_ids = itertools.count()
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self.restarts = 0
        self.status: dict = {}
        self.latest_drift: dict | None = None
        self.realized: RealizedPerformance | None = None  # the champion's
        self.realized_by_tag: dict[str, RealizedPerformance] = {}

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the process and wait (up to `timeout`) until it is up, so that the worker's
        first requests are monitored; scoring does not wait for it after that."""
        loop = asyncio.get_running_loop()
        self._up = asyncio.Event()
        self._tasks = [loop.create_task(self._supervise()), loop.create_task(self._hand_off())]
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            logger.error("the monitoring process did not start in %.0f s; scoring goes on", timeout)

    def record(
        self,
        matrix,
        scores,
        decisions,
        request_id,
        model_tag: str,
        endpoint: str,
        transaction_ids,
        hand_off_now: bool = False,
    ) -> None:
        """Queue one scored request for profiling (and the prediction log, with a request id
        in the log's sample). `hand_off_now`: write it to the monitoring process's socket at
        once, not at the next periodic hand-off (the kernel keeps what was written even if this
        worker dies)."""
        if request_id is not None and not self._in_log_sample(request_id):
            request_id, hand_off_now = None, False  # profiled only
        if not self._room_for(len(scores)):
            return
        self._pending.add(
            matrix, scores, decisions, request_id, model_tag, endpoint, time.time(), transaction_ids
        )
        if hand_off_now:
            self._send_pending()

    def record_logged_only(self, scores, decisions, model_tag: str, requests) -> None:
        """Queue the scores of several requests in one call, for the prediction log only (a
        challenger's scores of rows the champion served, profiled and logged): `requests` are
        (request_id, endpoint, transaction_ids, rows) in the order of the rows."""
        if not self._room_for(len(scores)):
            return
        now, spans, ids = time.time(), [], []
        for request_id, endpoint, transaction_ids, count in requests:
            logged = request_id is not None and self._in_log_sample(request_id)
            spans.append(
                channel.RequestSpan(
                    request_id if logged else None, count, model_tag, endpoint, now, False
                )
            )
            ids += transaction_ids if transaction_ids is not None else [None] * count
        self._pending.add_unprofiled(scores, decisions, spans, ids)

    def _room_for(self, rows: int) -> bool:
        """Whether the rows fit in what waits for the monitoring process; if not, they are
        dropped and counted."""
        if not self.connected or self._pending.rows + rows > self._max_rows:
            self._dropped(rows)
            return False
        return True

    def _in_log_sample(self, request_id: str) -> bool:
        return zlib.crc32(request_id.encode()) < self._log_below

    async def submit_labels(self, labels: list[Label]) -> FeedbackResult:
        if not self.connected or self.status.get("feedback", "unavailable") == "unavailable":
            raise MonitoringUnavailable("feedback unavailable: no prediction log")
        call = next(self._call_ids)
        done = asyncio.get_running_loop().create_future()
        self._calls[call] = done
        self._writer.write(channel.frame(channel.Labels(call, labels)))
        try:
            result = await done
        finally:
            self._calls.pop(call, None)
        self._listeners.on_labels(result)
        logger.info(
            "feedback received=%d matched=%d unknown=%d ambiguous=%d",
            *(result.received, result.matched, len(result.unknown), len(result.ambiguous)),
        )
        return result

    async def fleet_drift(self) -> dict | None:
        """The drift report of the latest closed window merged over every replica's profile in
        the shared directory (None when no replica wrote one)."""
        if not self.connected:
            raise MonitoringUnavailable("the monitoring process is starting")
        call = next(self._call_ids)
        done = asyncio.get_running_loop().create_future()
        self._calls[call] = done
        self._writer.write(channel.frame(channel.FleetDrift(call)))
        try:
            return await done
        finally:
            self._calls.pop(call, None)

    async def close(self, timeout: float = 10) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            self._send_pending()
            self._writer.write(channel.frame(channel.Close()))
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(self._writer.drain(), timeout)
            self._writer.close()
        if self._process is not None:
            try:
                await asyncio.to_thread(self._process.wait, timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()

    async def _supervise(self) -> None:
        while not self._closing:
            try:
                reader = await self._spawn()
                await self._read(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                logger.warning("monitoring process: %s", error)
            self._lost()
            if self._closing:
                return
            self.restarts += 1
            logger.error("monitoring process stopped; starting it again (%d)", self.restarts)
            await asyncio.sleep(RESTART_AFTER_S)

    async def _spawn(self) -> asyncio.StreamReader:
        ours, theirs = socket.socketpair()
        # The package's own folder first: a built Bento's source is not installed.
        path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
                [sys.executable, "-m", "monitoring.sidecar", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env={**os.environ, "PYTHONPATH": path},
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        writer.write(channel.frame(channel.Start(channel.VERSION, self._config, self._reference)))
        self._writer = writer
        return reader

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            header = await reader.readexactly(channel.HEADER.size)
            (size,) = channel.HEADER.unpack(header)
            self._handle(channel.to_worker.decode(await reader.readexactly(size)))

    def _handle(self, message: channel.ToWorker) -> None:
        match message:
            case channel.Status():
                self.status = msgspec.structs.asdict(message)
                self._up.set()
            case channel.Drift(report):
                self.latest_drift = report
                self._listeners.on_drift(report)
            case channel.Realized(realized):
                self.realized_by_tag[realized.model_tag] = realized
                if realized.model_tag == self._config.model_tag:
                    self.realized = realized
                self._listeners.on_realized(realized)
            case channel.Counted(metric, value):
                self._listeners.on_count(metric, value)
            case channel.LabelsDone(call, result, error) | channel.FleetDriftDone(
                call, result, error
            ):
                done = self._calls.get(call)
                if done is not None and not done.done():
                    if error is not None:
                        done.set_exception(MonitoringUnavailable(error))
                    else:
                        done.set_result(result)

    def _dropped(self, rows: int) -> None:
        for metric in DROPPED_METRICS:
            self._listeners.on_count(metric, rows)

    def _lost(self) -> None:
        """The process is gone: what was waiting for it is dropped (counted) or failed."""
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self.status = {}
        if self._pending.rows:
            self._dropped(self._pending.rows)
            self._pending = channel.ScoredBatch()
        for done in self._calls.values():
            if not done.done():
                done.set_exception(MonitoringUnavailable("the monitoring process stopped"))
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(1)

    async def _hand_off(self) -> None:
        while True:
            await asyncio.sleep(HAND_OFF_EVERY_S)
            self._send_pending()

    def _send_pending(self) -> None:
        batch = self._pending
        if not batch.rows or self._writer is None:
            return
        self._pending = channel.ScoredBatch()
        buffered = self._writer.transport.get_write_buffer_size()
        if buffered > self._max_rows * BYTES_PER_ROW:  # the process is not keeping up
            self._dropped(batch.rows)
            return
        self._writer.write(batch.to_message())
