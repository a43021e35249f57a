"""One API worker: its model and engine, its scorer (batching, the challenger), /score's payment
state, the scoring handlers, the explainer and the gRPC server, built from a Deployment; started
and stopped with the worker. What the mounted routes read of it is `http_app.Worker`.

The monitoring process is given (service.py builds it): serving/ does not import monitoring/.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import time

import anyio

import model_store
from serving.contract import schema
from serving.deployment import Deployment
from serving.http.endpoints import ScoringEndpoints
from serving.http.security import GrpcGuard
from serving.payments.payment_scoring import PaymentScoring, open_store
from serving.payments.payment_state import PaymentStore
from serving.protocols import codec, grpc_server, kserve_v1
from serving.scoring.admission import Admission
from serving.scoring.challenger import Challenger
from serving.scoring.explain import Explainer
from serving.scoring.runtime import FraudModel
from serving.scoring.scorer import ScoredRows, Scorer
from serving.telemetry import metrics, traffic
from serving.telemetry.loop_watch import LoopWatch

logger = logging.getLogger("fraud_bento.worker")
GC_YOUNG_THRESHOLD = 20_000


class FraudWorker:
    def __init__(self, deployment: Deployment, monitor):
        settings = deployment.settings
        serving = settings.serving
        self.deployment = deployment
        self.workers = serving.workers
        self.runtime = FraudModel.load(
            deployment.model_tag, serving.engine, serving.intra_op_threads
        )
        self.monitor = monitor  # monitoring.client.MonitorClient
        on_scored = self._monitor if settings.monitoring.enabled else None
        self.scorer = Scorer(
            self.runtime, serving, on_scored=on_scored, challenger=self._challenger()
        )
        features = deployment.features
        self.payments = PaymentScoring(
            deployment.model_payment_columns,
            features,
            self._payment_state(),
            self.scorer,
            settings.payments.max_clock_skew_s,
            settings.payments.max_rows_per_request,
            clock=time.time,
        )
        max_rows = serving.max_rows_per_request
        self.loop_watch = LoopWatch(serving.stall_log_ms)
        self.admission = Admission(serving.admission_target_ms, self.loop_watch.lateness)
        self.endpoints = ScoringEndpoints(
            self.admission,
            self.scorer,
            codec.RowsDecoder(features, max_rows),
            codec.ColumnsDecoder(features.names, max_rows),
            kserve_v1.V1Decoder(features, max_rows),
            self.payments,
        )
        self.explainer = Explainer(self.runtime)
        self.grpc_server = None
        self.background: list[asyncio.Task] = []
        logger.info(
            "serving %s (sha256 %s verified)",
            deployment.model_tag,
            self.runtime.stored.labels["sha256"],
        )
        # Start-up objects (model, libraries) live as long as the worker: out of the collector's
        # sight, a full collection no longer walks them and stalls the event loop.
        gc.collect()
        gc.freeze()
        # Requests allocate and free containers by the thousand a second; almost all die by
        # reference counting. At the default threshold (700) a young collection ran hundreds of
        # times a second under load (15-40% of the loop's stalls under overload); at 20,000,
        # 12,000 requests at 3,000 req/s triggered none (docs/performance.md, Stalls).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    def _payment_state(self) -> PaymentStore | str | None:
        """/score's state; why it is unavailable (the rest serves on); None: it does not apply."""
        settings = self.deployment.settings
        if self.deployment.payment_columns is None:
            return None
        delay_days = int(self.runtime.stored.metadata["label_delay_days"])
        try:
            return open_store(settings, delay_days)
        except (OSError, sqlite3.Error) as error:
            path = settings.payment_state_path()
            logger.error("the payment state at %s cannot be opened: %s", path, error)
            return f"the payment state cannot be opened ({error}): fix payments.state_path"

    def _challenger(self) -> Challenger | None:
        deployment = self.deployment
        tag = deployment.challenger_tag
        if tag is None:
            return None
        settings = deployment.settings
        config = settings.challenger
        model = FraudModel.load(tag, settings.serving.engine, settings.serving.intra_op_threads)

        def scored(scores, decisions, requests) -> None:
            traffic.TALLY.add_scores(tag, scores, int(decisions.sum()))
            if settings.monitoring.enabled:  # logged, not profiled: the features are served ones
                self.monitor.record_logged_only(scores, decisions, tag, requests)

        canary = config.canary_share if config.mode == "canary" else 0.0
        metrics.record_roles(deployment.model_tag, tag, canary)
        return Challenger(
            model,
            self.runtime.threshold,
            config.mode,
            config.canary_share,
            config.max_queued_rows,
            config.shadow_priority,
            on_scored=scored,
        )

    def _monitor(self, scored: ScoredRows) -> None:
        self.monitor.record(
            scored.matrix,
            scored.scores,
            scored.decisions,
            scored.request_id,
            self.deployment.model_tag,
            scored.protocol,
            scored.transaction_ids,
            hand_off_now=scored.durable,
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.background = [
            loop.create_task(traffic.flush_tally_periodically()),
            loop.create_task(self.loop_watch.run()),
            loop.create_task(self.admission.summarise_periodically()),
        ]
        await self.monitor.start()
        serving = self.deployment.settings.serving
        if serving.grpc_port:
            self.grpc_server = await grpc_server.start(
                self.scorer,
                self.admission,
                serving.grpc_host,
                serving.grpc_port,
                self.deployment.settings.security.max_grpc_message_bytes,
                (GrpcGuard(self.deployment.guard),),
            )
            logger.info("gRPC Open Inference Protocol on port %d", serving.grpc_port)

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        traffic.TALLY.flush()
        if self.grpc_server is not None:
            await grpc_server.stop(self.grpc_server, grace_s=5)
        self.scorer.shutdown()
        await self.monitor.close()
        if self.payments.store is not None:
            self.payments.store.close()

    async def explain(self, matrix, ids: list, request_id: str, top_k: int):
        """SHAP contributions of the `top_k` features of each row, with its probability."""
        probabilities = await self.scorer.probabilities(matrix, "explain")
        explanations = await anyio.to_thread.run_sync(
            self.explainer.explanations, matrix, ids, probabilities, top_k
        )
        return schema.ExplainResponse(
            request_id=request_id, model_tag=self.runtime.tag, explanations=explanations
        )

    def challenger_info(self) -> dict:
        """The challenger against the champion: this worker's shadow figures, and the realized
        figures of both on the same labelled transactions (from the prediction log)."""
        champion, tag = self.deployment.model_tag, self.deployment.challenger_tag
        challenger = self.scorer.challenger
        if challenger is None:
            return {"champion": champion, "challenger": None}
        realized = self.monitor.realized_by_tag
        return {
            "champion": champion,
            "challenger": tag,
            "mode": challenger.mode,
            "canary_share": challenger.canary_share if challenger.mode == "canary" else 0.0,
            "this_worker": challenger.stats.as_dict(),
            "realized": {
                role: realized[t].as_dict() if t in realized else None
                for role, t in (("champion", champion), ("challenger", tag))
            },
        }

    def model_info(self) -> dict:
        stored = self.runtime.stored
        metadata = stored.metadata
        return {
            "tag": stored.tag,
            "created": stored.created.isoformat(),
            "engine": self.runtime.engine,
            "engine_parity": metadata.get("engine_parity"),
            "engine_fallbacks": self.runtime.forest.fallbacks,
            "features": [feature.__dict__ for feature in self.deployment.features],
            "feature_hash": stored.labels.get("feature_hash"),
            "sha256": stored.labels.get("sha256"),
            "gate": stored.labels.get("gate"),
            "threshold": self.runtime.threshold,
            "threshold_rule": metadata.get("threshold_rule"),
            "metrics": metadata.get("test_metrics"),
            "train_window": metadata.get("train_window"),
            "test_window": metadata.get("test_window"),
            "promotion": model_store.promotion_of(
                stored.tag, self.deployment.settings.store.promotion_log
            ),
        }
