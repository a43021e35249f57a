"""fraud-bento: the Bento serving the promoted `fraud_rf` model.

The model is the pinned tag (`ops/model.lock`, or FRAUD_MODEL_TAG for one run), referenced as a
class attribute so the Bento carries exactly that model; so is a challenger when one is pinned
(`ops/challenger.lock`, or FRAUD_CHALLENGER_TAG). The routes are declared once
(serving/http/routes.py): the front door answers the scoring routes in front of BentoML's stack,
and the typed endpoints below are their documented form (BentoML's generated clients call them by
name), thin entries over the same handlers. docs/architecture.md walks a request through.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import bentoml
from pydantic import ValidationError

import model_store
from monitoring import client as monitoring_client
from monitoring.client import Listeners, MonitoringUnavailable
from monitoring.feedback import Label
from serving.contract import rules, schema
from serving.contract.refusals import ServingError, Unavailable
from serving.deployment import Deployment
from serving.http import answers, http_app, routes, stack
from serving.http.fast_path import REQUEST_ID
from serving.http.typed_api import RequestTypes
from serving.telemetry import logs, metrics
from serving.worker import FraudWorker
from settings import load_settings

SETTINGS = load_settings()
logs.configure(SETTINGS.serving.log_level)
logs.quiet_expected_errors((ValidationError, bentoml.exceptions.InvalidArgument))
DEPLOYMENT = Deployment.of(SETTINGS, Path(__file__))
TYPES = RequestTypes.of(SETTINGS, DEPLOYMENT.features, DEPLOYMENT.payment_columns)
UNLOGGED = [] if SETTINGS.serving.access_log else routes.unlogged_prefixes()
UNTRACED = [] if SETTINGS.serving.trace_scoring else routes.unlogged_prefixes()
HTTP_APP = http_app.make_app()  # its worker attached when BentoML makes the service


async def _answer(path: str, ctx: bentoml.Context, handle) -> object:
    """A typed endpoint's answer: its handler's, given the request id the front door settled,
    or its refusal through the one refusal function (its status set on the context too:
    BentoML gives the answer the context's status)."""
    request_id, durable = ctx.request.scope[REQUEST_ID]
    try:
        answer = await handle(request_id, durable)
    except ServingError as error:
        answer = answers.refusal(error, routes.find(path)[0].protocol)
        ctx.response.status_code = answer.status
    return answers.response(answer) if isinstance(answer, answers.Answer) else answer


@bentoml.asgi_app(HTTP_APP, path="/")
@bentoml.service(
    name="fraud_detector",
    workers=SETTINGS.serving.workers,
    traffic={"timeout": SETTINGS.serving.request_timeout_s},
    logging={"access": {"enabled": True, "skip_paths": UNLOGGED}},
    tracing={"excluded_urls": UNTRACED},
)
class FraudDetector:
    model = bentoml.models.BentoModel(DEPLOYMENT.model_tag)
    if DEPLOYMENT.challenger_tag is not None:  # after `model` (serving/scoring/runtime.py)
        model_challenger = bentoml.models.BentoModel(DEPLOYMENT.challenger_tag)

    def __init__(self) -> None:
        metrics.PRECISION_FLOOR.set(SETTINGS.monitoring.precision_floor)
        monitor = monitoring_client.for_service(
            SETTINGS,
            DEPLOYMENT.features.names,
            DEPLOYMENT.model_tag,
            DEPLOYMENT.challenger_tag,
            model_store.load_reference_profile(DEPLOYMENT.stored),
            Listeners(**metrics.MONITORING_LISTENERS),
        )
        self.worker = FraudWorker(DEPLOYMENT, monitor)
        http_app.attach(HTTP_APP, self.worker)

    @bentoml.on_startup
    async def start(self) -> None:
        await self.worker.start()

    @bentoml.on_shutdown
    async def stop(self) -> None:
        await self.worker.stop()

    @bentoml.api
    async def predict(
        self, transactions: TYPES.predict, ctx: bentoml.Context
    ) -> schema.PredictResponse:
        """Score one or more transactions: fraud probability and decision for each."""
        matrix = schema.to_matrix(transactions, DEPLOYMENT.features.names)
        ids = [row.transaction_id for row in transactions]
        return await _answer(  # the types above enforced the contract
            "/predict",
            ctx,
            lambda request_id, durable: self.worker.endpoints.decide_rows(
                matrix, ids, request_id, True, durable
            ),
        )

    @bentoml.api
    async def predict_columns(
        self,
        columns: list[str],
        data: list[list[rules.ColumnsValue]],
        ctx: bentoml.Context,
        transaction_ids: rules.ColumnsIds = None,
    ) -> schema.PredictResponse:
        """Score many transactions sent as columns: `columns` names every model feature once (any
        order), `data` holds one list of values per transaction in that order."""
        return await _answer(
            "/predict_columns",
            ctx,
            lambda request_id, durable: self.worker.endpoints.decide_columns(
                columns, data, transaction_ids, request_id, durable
            ),
        )

    @bentoml.api
    async def score(
        self, payments: TYPES.score, ctx: bentoml.Context, include_features: bool = False
    ) -> schema.PredictResponse:
        """Score raw payments, in the training table's columns: their features are computed from
        the online state (each payment then enters it), and decided as /predict decides."""
        return await _answer(
            "/score",
            ctx,
            lambda request_id, durable: self.worker.endpoints.decide_payments(
                payments, request_id, durable, include_features
            ),
        )

    @bentoml.api
    async def score_columns(
        self,
        columns: list[str],
        data: TYPES.score_columns,
        ctx: bentoml.Context,
        include_features: bool = False,
    ) -> schema.PredictResponse:
        """Score raw payments sent as columns: `columns` names each of /score's payment fields
        once (any order), `data` holds one list of values per payment in that order."""
        return await _answer(
            "/score_columns",
            ctx,
            lambda request_id, durable: self.worker.endpoints.decide_payment_columns(
                columns, data, request_id, durable, include_features
            ),
        )

    @bentoml.api
    async def explain(
        self, transactions: TYPES.explain, ctx: bentoml.Context, top_k: TYPES.top_k = 5
    ) -> schema.ExplainResponse:
        """SHAP contributions of the top_k features for each transaction."""
        matrix = schema.to_matrix(transactions, DEPLOYMENT.features.names)
        ids = [row.transaction_id for row in transactions]
        return await _answer(
            "/explain",
            ctx,
            lambda request_id, _: self.worker.explain(matrix, ids, request_id, top_k),
        )

    @bentoml.api
    async def feedback(
        self, labels: TYPES.feedback, ctx: bentoml.Context
    ) -> schema.FeedbackResponse:
        """Delayed labels for earlier predictions; ids with no logged prediction come back."""
        return await _answer("/feedback", ctx, lambda *_: self._feedback(labels))

    async def _feedback(self, labels: list[schema.FeedbackLabel]) -> schema.FeedbackResponse:
        store, monitor = self.worker.payments.store, self.worker.monitor
        if store is not None:  # the state first: a failure here is retried whole
            known = [(item.transaction_id, item.is_fraud) for item in labels if item.transaction_id]
            await anyio.to_thread.run_sync(store.label, known)  # StateUnavailable: 503
        try:
            result = await monitor.submit_labels([Label.given(**i.model_dump()) for i in labels])
        except MonitoringUnavailable as error:
            raise Unavailable(str(error)) from error
        realized = schema.RealizedFigures(**monitor.realized.as_dict())
        return schema.FeedbackResponse(**dataclasses.asdict(result), realized=realized)


stack.install(
    FraudDetector,
    DEPLOYMENT.guard,
    SETTINGS.security,
    SETTINGS.serving,
    endpoints=lambda: HTTP_APP.state.worker.endpoints,
    model_tag=DEPLOYMENT.model_tag,
    features=DEPLOYMENT.features,
    payment_columns=DEPLOYMENT.payment_columns,
)
