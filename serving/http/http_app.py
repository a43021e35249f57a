"""GET endpoints and the Open Inference Protocol over HTTP, mounted into the Bento.

`make_app()` builds the app when service.py is imported (BentoML mounts it then); the worker
attaches itself once it exists (`attach`), and each handler is given it (`Worker`: what the
routes read of it). The scoring itself goes through the same Scorer (validation, batching,
metrics) as /predict and gRPC.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from serving.contract.refusals import ServingError
from serving.http import answers, routes
from serving.http.endpoints import Call, ScoringEndpoints
from serving.http.fast_path import REQUEST_ID
from serving.payments.payment_scoring import PaymentScoring
from serving.protocols import codec, kserve_v1, oip, oip_json
from serving.scoring.runtime import FraudModel
from serving.scoring.scorer import Scorer
from serving.telemetry.loop_watch import LoopWatch
from serving.telemetry.stats import STATS

ROUTES = APIRouter()
DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>fraud-bento API</title>
  <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="./static_content/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "./docs.json", dom_id: "#swagger-ui", deepLinking: true});
  </script>
</body>
</html>
"""


class InferOutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferOutputTensor]


class Worker(Protocol):
    """What these routes read of the API worker (service.py's FraudDetector)."""

    runtime: FraudModel
    scorer: Scorer
    endpoints: ScoringEndpoints
    payments: PaymentScoring
    monitor: Any  # monitoring.client.MonitorClient: the worker's monitoring process
    loop_watch: LoopWatch
    grpc_server: Any
    workers: int

    def model_info(self) -> dict: ...

    def challenger_info(self) -> dict: ...


def attach(app: FastAPI, worker: Worker) -> None:
    app.state.worker = worker


def _attached(request: Request) -> Worker:
    return request.app.state.worker


Service = Annotated[Worker, Depends(_attached)]


def _refused(request: Request, error: ServingError) -> Response:
    """A refusal on these routes, answered and counted under its route's protocol."""
    found = routes.find(request.url.path)
    return answers.response(answers.refusal(error, found[0].protocol if found else codec.PROTOCOL))


def make_app() -> FastAPI:
    """The app of these routes, its worker attached later (`attach`). FastAPI's own /docs would
    show only these routes, with Swagger UI from a CDN: /docs here shows BentoML's whole
    document (/docs.json) with the Swagger UI files BentoML serves."""
    app = FastAPI(title="fraud-bento", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(ServingError, _refused)
    app.include_router(ROUTES)
    return app


@ROUTES.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    """Swagger UI over the whole API (/docs.json), every file from this server."""
    return HTMLResponse(DOCS_PAGE)


@ROUTES.get("/health")
def health(service: Service) -> dict:
    monitor = service.monitor
    return {
        "status": "healthy",
        "model_tag": service.runtime.tag,
        "integrity_check": "passed",
        "uptime_s": round(time.time() - service.runtime.loaded_at, 1),
        "grpc": "serving" if service.grpc_server is not None else "disabled",
        "profiling": "available" if monitor.status.get("profiling") else "unavailable",
        "feedback": monitor.status.get("feedback", "unavailable"),
        "payment_state": service.payments.status,
        "monitoring_process": {"pid": monitor.pid, "restarts": monitor.restarts},
    }


@ROUTES.get("/challenger")
def challenger(service: Service) -> dict:
    """The challenger beside the champion, if one is pinned: mode, share, and how the two
    compare (this worker's shadow figures; realized figures from the labels)."""
    return service.challenger_info()


@ROUTES.get("/model_info")
def model_info(service: Service) -> dict:
    return service.model_info()


@ROUTES.get("/stats")
def stats(service: Service) -> dict:
    return {
        "model_tag": service.runtime.tag,
        # Each API worker keeps its own figures; /metrics adds every worker's up (BentoML's
        # Prometheus multiprocess mode), and realized figures come from the shared log.
        "scope": {"of": "worker", "pid": os.getpid(), "workers": service.workers},
        **STATS.snapshot(),
        "event_loop_stalls": service.loop_watch.stalls,
        "realized": service.monitor.realized.as_dict() if service.monitor.realized else None,
    }


@ROUTES.get("/drift")
async def drift(service: Service, scope: Literal["replica", "fleet"] = "replica") -> dict:
    """The latest closed profiling window compared with the model's reference profile: this
    replica's, or (`scope=fleet`) the merge of every replica's profile in the shared directory."""
    monitor = service.monitor
    if not monitor.status:
        return {"status": "the monitoring process is starting", "scope": scope}
    if not monitor.status["has_reference"]:
        return {"status": "the served model has no reference profile (trained before monitoring)"}
    report = await monitor.fleet_drift() if scope == "fleet" else monitor.latest_drift
    if report is None:
        return {"status": "no window closed yet", "scope": scope, **monitor.status}
    return {"scope": scope, **report}


@ROUTES.get("/v2/health/live")
def live() -> dict:
    return {"live": True}


@ROUTES.get("/v2/health/ready")
def ready() -> dict:
    return {"ready": True}


@ROUTES.get("/v2")
def server_metadata() -> dict:
    return oip.server_metadata()


def _challenger(service: Worker):
    challenger = service.scorer.challenger
    return challenger.model if challenger is not None else None


def _model_or_error(service: Worker, name: str, version: str | None):
    """The model a name and version address: the champion, or the challenger by its version."""
    model, challenger = service.runtime, _challenger(service)
    oip.check_model(model, name, version, challenger)
    return challenger if challenger is not None and version == challenger.version else model


@ROUTES.get("/v2/models/{name}")
@ROUTES.get("/v2/models/{name}/versions/{version}")
def model_metadata(service: Service, name: str, version: str | None = None):
    _model_or_error(service, name, version)
    return oip.model_metadata(service.runtime, _challenger(service))


@ROUTES.get("/v2/models/{name}/config")
@ROUTES.get("/v2/models/{name}/versions/{version}/config")
def model_config(service: Service, name: str, version: str | None = None):
    """The model configuration (Triton's extension): the feature order is in `parameters`."""
    return oip.model_config(_model_or_error(service, name, version))


@ROUTES.get("/v2/models/{name}/ready")
@ROUTES.get("/v2/models/{name}/versions/{version}/ready")
def model_ready(service: Service, name: str, version: str | None = None):
    _model_or_error(service, name, version)
    return {"name": name, "ready": True}


def _call(request: Request, body: bytes, **params: str | None) -> Call:
    """A request to a scoring route as its handler takes it, with the id the front door settled
    (and sends back)."""
    request_id, durable = request.scope[REQUEST_ID]
    given = {name: value for name, value in params.items() if value is not None}
    return Call(body, given, request_id, durable, request.headers.get(oip_json.HEADER_LENGTH))


@ROUTES.post("/v2/models/{name}/infer", response_model=InferResponse)
@ROUTES.post("/v2/models/{name}/versions/{version}/infer", response_model=InferResponse)
async def infer(service: Service, name: str, request: Request, version: str | None = None):
    """An inference request (also answered by the lean scoring path, serving/http/fast_path.py)."""
    call = _call(request, await request.body(), name=name, version=version)
    return answers.response(await service.endpoints.infer(call))


@ROUTES.get("/v1/models/{name}")
def v1_model_ready(service: Service, name: str) -> dict:
    """KServe's V1 protocol: whether the model is ready."""
    kserve_v1.check_model(service.runtime.name, name)
    return {"name": name, "ready": True}


@ROUTES.post("/v1/models/{name}:predict")
async def v1_predict(service: Service, name: str, request: Request) -> Response:
    """KServe's V1 protocol: `{"instances": [...]}`, each a list of the model's features in its
    order or an object of features by name; answers `{"predictions": [...]}` (also answered by
    the lean scoring path, serving/http/fast_path.py)."""
    call = _call(request, await request.body(), name=name)
    return answers.response(await service.endpoints.predict_v1(call))
