"""fraud-bento: the Bento serving the promoted `fraud_rf` model.

The model is the pinned tag (`ops/model.lock`, or FRAUD_MODEL_TAG for one run), referenced as a
class attribute so the Bento carries exactly that model; so is a challenger when one is pinned
(`ops/challenger.lock`, or FRAUD_CHALLENGER_TAG), shadowing the champion or deciding a canary
share (serving/scoring/challenger.py). Request types are built from the model's
own feature schema. HTTP /predict, the Open Inference Protocol over HTTP (/v2) and over gRPC all
share one Scorer per worker: validation, adaptive batching, metrics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any

import anyio
import bentoml
import numpy as np
from pydantic import Field, ValidationError
from starlette.responses import JSONResponse, Response

import model_store
from monitoring import SCORE_COLUMN
from monitoring.channel import ProcessConfig
from monitoring.client import Listeners, MonitorClient, MonitoringUnavailable
from monitoring.feedback import Label
from serving.contract import contract, schema
from serving.contract.errors import ServingError
from serving.http import api_document, fast_path, http_app, security
from serving.payments.payment_requests import (
    PaymentValue,
    example_payment,
    payment_columns,
    payment_model,
)
from serving.payments.payment_scoring import PaymentScoring, open_store
from serving.payments.payment_state import PaymentStore, StateUnavailable
from serving.protocols import codec, grpc_server, kserve_v1
from serving.scoring.batching import Overloaded
from serving.scoring.challenger import Challenger
from serving.scoring.explain import Explainer
from serving.scoring.runtime import FraudModel, challenger_tag, pinned_tag
from serving.scoring.scorer import Scored, Scorer
from serving.telemetry import logs, metrics, traffic
from serving.telemetry.loop_watch import LoopWatch
from settings import load_settings

SETTINGS = load_settings()
logs.configure(SETTINGS.serving.log_level)
logs.quiet_expected_errors((Overloaded, ValidationError, bentoml.exceptions.InvalidArgument))
MODEL_TAG = pinned_tag(SETTINGS, Path(__file__))
STORED_MODEL = model_store.get(MODEL_TAG)
model_store.verify(STORED_MODEL)  # refuse a tampered model before any worker starts
CHALLENGER_TAG = challenger_tag(SETTINGS, Path(__file__))
if CHALLENGER_TAG is not None:
    STORED_CHALLENGER = model_store.get(CHALLENGER_TAG)
    model_store.verify(STORED_CHALLENGER)
    if STORED_CHALLENGER.tag == STORED_MODEL.tag:
        raise ValueError(f"the challenger {CHALLENGER_TAG} is the champion: unpin one of them")
    if STORED_CHALLENGER.labels.get("feature_hash") != STORED_MODEL.labels.get("feature_hash"):
        raise ValueError(
            f"the challenger {CHALLENGER_TAG} takes other features than the champion "
            f"{MODEL_TAG}: both must score the same requests"
        )
GUARD = security.Guard.from_config(SETTINGS.security)  # bad key configuration stops start-up
FEATURES = STORED_MODEL.schema
FEATURE_NAMES = FEATURES.names
schema.document_validation_errors()
Transaction = contract.transaction_model(
    FEATURES, on_invalid=lambda fields: traffic.record_rejection("http", fields)
)
PredictBatch = Annotated[
    list[Transaction], Field(**contract.rows_bounds(SETTINGS.serving.max_rows_per_request))
]
ExplainBatch = Annotated[
    list[Transaction], Field(**contract.rows_bounds(SETTINGS.serving.explain_max_rows))
]
FeedbackBatch = Annotated[
    list[schema.FeedbackLabel],
    Field(min_length=1, max_length=SETTINGS.monitoring.max_feedback_labels),
]
TopK = Annotated[int, Field(ge=1, le=len(FEATURE_NAMES))]
MODEL_PAYMENT_COLUMNS = payment_columns(STORED_MODEL)
PAYMENT_COLUMNS = MODEL_PAYMENT_COLUMNS if SETTINGS.payments.store != "off" else None
if (
    PAYMENT_COLUMNS is not None
    and SETTINGS.payments.store == "embedded"
    and (SETTINGS.serving.workers > 1)
):
    raise ValueError(
        f"serving.workers is {SETTINGS.serving.workers}, but the embedded payment state "
        "(payments.store = 'embedded') has one owner: set FRAUD_SERVING__WORKERS=1, or "
        "FRAUD_PAYMENTS__STORE=redis to share it, or =off to serve without /score"
    )
PaymentRow = (
    payment_model(
        PAYMENT_COLUMNS,
        FEATURES,
        on_invalid=lambda fields: traffic.record_rejection("score", fields),
    )
    if PAYMENT_COLUMNS is not None
    else dict[str, Any]  # any body: /score answers 409, it does not apply to this model
)
PAYMENT_ROWS = contract.rows_bounds(SETTINGS.payments.max_rows_per_request)
ScoreBatch = Annotated[list[PaymentRow], Field(**PAYMENT_ROWS)]
ScoreColumnsData = Annotated[list[list[PaymentValue]], Field(**PAYMENT_ROWS)]
# The scoring routes: BentoML's per-request access log line, traffic metrics and OpenTelemetry
# span cost several times the scoring itself; they stay on for every other route.
SCORING_PATHS = ["/predict", "/predict_columns", "/score", "/v2/models/", "/v1/models/"]
logger = logging.getLogger("fraud_bento.service")
GC_YOUNG_THRESHOLD = 20_000


def _request_id(ctx: bentoml.Context) -> tuple[str, bool]:
    """The request's id, settled by the front door (which returns it on the answer), and whether
    the caller chose it (so may retry with it)."""
    return ctx.request.scope[fast_path.REQUEST_ID]


async def _answer(scoring, ctx: bentoml.Context) -> Response:
    """A typed endpoint's answer: the scoring's JSON bytes as they are, or its refusal (its
    status set on the context too: BentoML gives the answer the context's status)."""
    try:
        return Response(await scoring, media_type="application/json")
    except ServingError as error:
        ctx.response.status_code = error.status
        return JSONResponse(error.payload(), status_code=error.status, headers=error.headers)


def _monitor_client(stored: model_store.StoredModel) -> MonitorClient:
    """The worker's monitoring process: profiling, drift and the prediction log."""
    config = SETTINGS.monitoring
    metrics.PRECISION_FLOOR.set(config.precision_floor)
    directory = SETTINGS.monitoring_directory()
    process_config = ProcessConfig(
        features=FEATURE_NAMES,
        monitored=[f for f in [*FEATURE_NAMES, SCORE_COLUMN] if f not in config.exclude_features],
        directory=str(directory),
        window_s=config.window_s,
        drift_p_value=config.drift_p_value,
        drift_min_effect=config.drift_min_effect,
        max_queued_rows=config.max_queued_rows,
        profile_max_rows_per_s=config.profile_max_rows_per_s,
        feedback_db=str(config.feedback_db or directory / "feedback.db"),
        challenger_tag=CHALLENGER_TAG,
        database_url=config.database_url,
        realized_refresh_s=config.realized_refresh_s,
        model_tag=MODEL_TAG,
        realized_window_days=config.realized_window_days,
        prediction_retention_days=config.prediction_retention_days,
        log_level=SETTINGS.serving.log_level,
    )
    return MonitorClient(
        process_config,
        model_store.load_reference_profile(stored),
        max_queued_rows=config.max_queued_rows,
        log_sample=config.log_sample,
        listeners=Listeners(
            on_drift=metrics.record_drift,
            on_realized=metrics.record_realized,
            on_count=metrics.count,
            on_labels=metrics.record_feedback,
        ),
    )


HTTP_APP = http_app.make_app()  # its worker attached in FraudDetector.__init__


@bentoml.asgi_app(HTTP_APP, path="/")
@bentoml.service(
    name="fraud_detector",
    workers=SETTINGS.serving.workers,
    traffic={"timeout": SETTINGS.serving.request_timeout_s},
    logging={
        "access": {
            "enabled": True,
            "skip_paths": [] if SETTINGS.serving.access_log else SCORING_PATHS,
        }
    },
    tracing={"excluded_urls": [] if SETTINGS.serving.trace_scoring else SCORING_PATHS},
)
class FraudDetector:
    model = bentoml.models.BentoModel(MODEL_TAG)
    if CHALLENGER_TAG is not None:  # after `model` in BentoML's list (serving/scoring/runtime.py)
        model_challenger = bentoml.models.BentoModel(CHALLENGER_TAG)
    workers = SETTINGS.serving.workers

    def __init__(self) -> None:
        self.runtime = FraudModel.load(
            MODEL_TAG, SETTINGS.serving.engine, SETTINGS.serving.intra_op_threads
        )
        self.monitor = _monitor_client(self.runtime.stored)
        monitor = self._monitor if SETTINGS.monitoring.enabled else None
        self.scorer = Scorer(
            self.runtime, SETTINGS.serving, on_scored=monitor, challenger=self._challenger()
        )
        max_rows = SETTINGS.serving.max_rows_per_request
        self.payments = PaymentScoring(
            MODEL_PAYMENT_COLUMNS,
            FEATURES,
            PaymentRow,
            self._payment_state(),
            self.scorer,
            SETTINGS.payments.max_clock_skew_s,
            SETTINGS.payments.max_rows_per_request,
            clock=time.time,
        )
        self.endpoints = fast_path.ScoringEndpoints(
            self.scorer,
            codec.RowsDecoder(FEATURES, Transaction, max_rows),
            codec.ColumnsDecoder(FEATURE_NAMES, max_rows),
            kserve_v1.V1Decoder(FEATURES, Transaction, max_rows),
            self.payments,
        )
        self.explainer = Explainer(self.runtime)
        self.loop_watch = LoopWatch(SETTINGS.serving.stall_log_ms)
        self.grpc_server = None
        http_app.attach(HTTP_APP, self)
        logger.info(
            "serving %s (sha256 %s verified)", MODEL_TAG, self.runtime.stored.labels["sha256"]
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
        if PAYMENT_COLUMNS is None:
            return None
        delay_days = int(self.runtime.stored.metadata["label_delay_days"])
        try:
            return open_store(SETTINGS, delay_days)
        except (OSError, sqlite3.Error) as error:
            path = SETTINGS.payment_state_path()
            logger.error("the payment state at %s cannot be opened: %s", path, error)
            return f"the payment state cannot be opened ({error}): fix payments.state_path"

    def _challenger(self) -> Challenger | None:
        if CHALLENGER_TAG is None:
            return None
        config = SETTINGS.challenger
        model = FraudModel.load(
            CHALLENGER_TAG, SETTINGS.serving.engine, SETTINGS.serving.intra_op_threads
        )

        def scored(scores, decisions, requests) -> None:
            traffic.TALLY.add_scores(CHALLENGER_TAG, scores, int(decisions.sum()))
            if SETTINGS.monitoring.enabled:  # logged, not profiled: the features are served ones
                self.monitor.record_logged_only(scores, decisions, CHALLENGER_TAG, requests)

        metrics.record_roles(
            MODEL_TAG, CHALLENGER_TAG, config.canary_share if config.mode == "canary" else 0.0
        )
        return Challenger(
            model,
            self.runtime.threshold,
            config.mode,
            config.canary_share,
            config.max_queued_rows,
            config.shadow_priority,
            on_scored=scored,
        )

    def _monitor(self, scored: Scored) -> None:
        self.monitor.record(
            scored.matrix,
            scored.scores,
            scored.decisions,
            scored.request_id,
            MODEL_TAG,
            scored.protocol,
            scored.transaction_ids,
            hand_off_now=scored.durable,
        )

    @bentoml.on_startup
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.background = [
            loop.create_task(traffic.flush_tally_periodically()),
            loop.create_task(self.loop_watch.run()),
        ]
        await self.monitor.start()
        if SETTINGS.serving.grpc_port:
            self.grpc_server = await grpc_server.start(
                self.scorer,
                SETTINGS.serving.grpc_host,
                SETTINGS.serving.grpc_port,
                SETTINGS.security.max_grpc_message_bytes,
                (security.GrpcGuard(GUARD),),
            )
            logger.info("gRPC Open Inference Protocol on port %d", SETTINGS.serving.grpc_port)

    @bentoml.on_shutdown
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

    @bentoml.api
    async def predict(
        self, transactions: PredictBatch, ctx: bentoml.Context
    ) -> schema.PredictResponse:
        """Score one or more transactions: fraud probability and decision for each."""
        request_id, durable = _request_id(ctx)
        return await _answer(  # the types above enforced the contract
            self.endpoints.predict(
                schema.to_matrix(transactions, FEATURE_NAMES),
                [row.transaction_id for row in transactions],
                request_id,
                validated=True,
                durable=durable,
            ),
            ctx,
        )

    @bentoml.api
    async def predict_columns(
        self,
        columns: list[str],
        data: list[list[contract.ColumnsValue]],
        ctx: bentoml.Context,
        transaction_ids: contract.ColumnsIds = None,
    ) -> schema.PredictResponse:
        """Score many transactions sent as columns: `columns` names every model feature once (any
        order), `data` holds one list of values per transaction in that order."""
        request_id, durable = _request_id(ctx)
        return await _answer(
            self.endpoints.predict_given_columns(
                columns, data, transaction_ids, request_id, durable
            ),
            ctx,
        )

    @bentoml.api
    async def score(
        self, payments: ScoreBatch, ctx: bentoml.Context, include_features: bool = False
    ) -> schema.PredictResponse:
        """Score raw payments, in the training table's columns: their features are computed from
        the online state (each payment then enters it), and decided as /predict decides."""
        request_id, durable = _request_id(ctx)
        return await _answer(
            self.payments.score_rows(payments, request_id, durable, include_features), ctx
        )

    @bentoml.api
    async def score_columns(
        self,
        columns: list[str],
        data: ScoreColumnsData,
        ctx: bentoml.Context,
        include_features: bool = False,
    ) -> schema.PredictResponse:
        """Score raw payments sent as columns: `columns` names each of /score's payment fields
        once (any order), `data` holds one list of values per payment in that order."""
        request_id, durable = _request_id(ctx)
        return await _answer(
            self.payments.score_columns(columns, data, request_id, durable, include_features),
            ctx,
        )

    @bentoml.api
    async def explain(
        self, transactions: ExplainBatch, ctx: bentoml.Context, top_k: TopK = 5
    ) -> schema.ExplainResponse:
        """SHAP contributions of the top_k features for each transaction."""
        request_id, _ = _request_id(ctx)
        matrix = schema.to_matrix(transactions, FEATURE_NAMES)
        probabilities = await self.scorer.score(matrix, "explain")
        values, base = await anyio.to_thread.run_sync(self.explainer.explain, matrix)
        explanations = []
        for row, probability, contributions, features in zip(
            transactions, probabilities, values, matrix, strict=True
        ):
            top = np.argsort(-np.abs(contributions))[:top_k]
            explanations.append(
                schema.Explanation(
                    transaction_id=row.transaction_id,
                    fraud_probability=float(probability),
                    base_value=base,
                    contributions=[
                        schema.Contribution(
                            feature=FEATURE_NAMES[i],
                            value=float(features[i]),
                            shap=float(contributions[i]),
                        )
                        for i in top
                    ],
                )
            )
        return schema.ExplainResponse(
            request_id=request_id, model_tag=MODEL_TAG, explanations=explanations
        )

    @bentoml.api
    async def feedback(self, labels: FeedbackBatch) -> schema.FeedbackResponse:
        """Delayed labels for earlier predictions; ids with no logged prediction come back."""
        if self.payments.store is not None:  # the state first: a failure here is retried whole
            known = [(item.transaction_id, item.is_fraud) for item in labels if item.transaction_id]
            try:
                await anyio.to_thread.run_sync(self.payments.store.label, known)
            except StateUnavailable as error:
                raise bentoml.exceptions.ServiceUnavailable(str(error)) from error
        try:
            result = await self.monitor.submit_labels(
                [
                    Label(
                        label=item.is_fraud,
                        transaction_id=item.transaction_id,
                        request_id=item.request_id,
                        label_time=item.label_time.timestamp() if item.label_time else None,
                    )
                    for item in labels
                ]
            )
        except MonitoringUnavailable as error:
            raise bentoml.exceptions.ServiceUnavailable(str(error)) from error
        logger.info(
            "feedback received=%d matched=%d unknown=%d ambiguous=%d",
            result.received,
            result.matched,
            len(result.unknown),
            len(result.ambiguous),
        )
        return schema.FeedbackResponse(
            received=result.received,
            matched=result.matched,
            unknown=result.unknown,
            ambiguous=result.ambiguous,
            realized=schema.RealizedPerformance(**self.monitor.realized.as_dict()),
        )

    def challenger_info(self) -> dict:
        """The challenger against the champion: this worker's shadow figures, and the realized
        figures of both on the same labelled transactions (from the prediction log)."""
        challenger = self.scorer.challenger
        if challenger is None:
            return {"champion": MODEL_TAG, "challenger": None}
        realized = self.monitor.realized_by_tag
        return {
            "champion": MODEL_TAG,
            "challenger": CHALLENGER_TAG,
            "mode": challenger.mode,
            "canary_share": challenger.canary_share if challenger.mode == "canary" else 0.0,
            "this_worker": challenger.stats.as_dict(),
            "realized": {
                role: realized[tag].as_dict() if tag in realized else None
                for role, tag in (("champion", MODEL_TAG), ("challenger", CHALLENGER_TAG))
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
            "features": [feature.__dict__ for feature in FEATURES],
            "feature_hash": stored.labels.get("feature_hash"),
            "sha256": stored.labels.get("sha256"),
            "gate": stored.labels.get("gate"),
            "threshold": self.runtime.threshold,
            "threshold_rule": metadata.get("threshold_rule"),
            "metrics": metadata.get("test_metrics"),
            "train_window": metadata.get("train_window"),
            "test_window": metadata.get("test_window"),
            "promotion": model_store.promotion_of(stored.tag, SETTINGS.store.promotion_log),
        }


SECURITY = {
    "guard": GUARD,
    "max_body_bytes": SETTINGS.security.max_body_bytes,
    "metrics_open": SETTINGS.security.metrics_open,
}


def _scoring_layers() -> list[fast_path.Layer]:
    """What wraps the lean scoring handlers, innermost first: the security checks (keys, rates,
    sizes, media types), then BentoML's access log and spans when the settings ask for them."""
    layers = [lambda app: security.SecurityMiddleware(app, **SECURITY)]
    if SETTINGS.serving.access_log:
        layers.append(fast_path.access_log)
    if SETTINGS.serving.trace_scoring:
        layers.append(fast_path.tracing)
    return layers


FraudDetector.add_asgi_middleware(security.SecurityMiddleware, **SECURITY)
FraudDetector.add_asgi_middleware(
    api_document.ApiDocumentMiddleware,
    render=lambda: api_document.document(
        FraudDetector.openapi_spec.asdict(),
        MODEL_TAG,
        FEATURES,
        example_payment(PAYMENT_COLUMNS, FEATURES) if PAYMENT_COLUMNS else None,
    ),
)
FraudDetector.add_asgi_middleware(
    fast_path.FrontDoor.install,
    endpoints=lambda: HTTP_APP.state.worker.endpoints,
    lean=SETTINGS.serving.fast_path,
    timeout_s=SETTINGS.serving.request_timeout_s,
    layers=_scoring_layers(),
)
