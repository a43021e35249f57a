"""GET endpoints and the Open Inference Protocol over HTTP, mounted into the Bento.

Handlers reach the running service with `bentoml.get_current_service()`; the scoring itself goes
through the same Scorer (validation, batching, metrics) as /predict and gRPC.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from serving.contract.errors import ServingError
from serving.http.fast_path import REQUEST_ID
from serving.protocols import kserve_v1, oip, oip_json
from serving.telemetry.stats import STATS

# FastAPI's own /docs would show only these routes, with Swagger UI from a CDN: /docs below
# shows BentoML's whole document (/docs.json) with the Swagger UI files BentoML serves.
app = FastAPI(title="fraud-bento", version="1", docs_url=None, redoc_url=None, openapi_url=None)
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


def _service():
    return bentoml.get_current_service()


@app.exception_handler(ServingError)
def _refused(request: Request, error: ServingError) -> JSONResponse:
    """The one mapping of serving errors to answers on these routes."""
    return JSONResponse(error.payload(), status_code=error.status, headers=error.headers)


@app.get("/docs", include_in_schema=False)
def docs() -> HTMLResponse:
    """Swagger UI over the whole API (/docs.json), every file from this server."""
    return HTMLResponse(DOCS_PAGE)


@app.get("/health")
def health() -> dict:
    service = _service()
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


@app.get("/challenger")
def challenger() -> dict:
    """The challenger beside the champion, if one is pinned: mode, share, and how the two
    compare (this worker's shadow figures; realized figures from the labels)."""
    return _service().challenger_info()


@app.get("/model_info")
def model_info() -> dict:
    return _service().model_info()


@app.get("/stats")
def stats() -> dict:
    service = _service()
    return {
        "model_tag": service.runtime.tag,
        # Each API worker keeps its own figures; /metrics adds every worker's up (BentoML's
        # Prometheus multiprocess mode), and realized figures come from the shared log.
        "scope": {"of": "worker", "pid": os.getpid(), "workers": service.workers},
        **STATS.snapshot(),
        "event_loop_stalls": service.loop_watch.stalls,
        "realized": service.monitor.realized.as_dict() if service.monitor.realized else None,
    }


@app.get("/drift")
async def drift(scope: Literal["replica", "fleet"] = "replica") -> dict:
    """The latest closed profiling window compared with the model's reference profile: this
    replica's, or (`scope=fleet`) the merge of every replica's profile in the shared directory."""
    monitor = _service().monitor
    if not monitor.status:
        return {"status": "the monitoring process is starting", "scope": scope}
    if not monitor.status["has_reference"]:
        return {"status": "the served model has no reference profile (trained before monitoring)"}
    report = await monitor.fleet_drift() if scope == "fleet" else monitor.latest_drift
    if report is None:
        return {"status": "no window closed yet", "scope": scope, **monitor.status}
    return {"scope": scope, **report}


@app.get("/v2/health/live")
def live() -> dict:
    return {"live": True}


@app.get("/v2/health/ready")
def ready() -> dict:
    return {"ready": True}


@app.get("/v2")
def server_metadata() -> dict:
    return oip.server_metadata()


def _challenger():
    challenger = _service().scorer.challenger
    return challenger.model if challenger is not None else None


def _model_or_error(name: str, version: str | None):
    """The model a name and version address: the champion, or the challenger by its version."""
    model, challenger = _service().runtime, _challenger()
    oip.check_model(model, name, version, challenger)
    return challenger if challenger is not None and version == challenger.version else model


@app.get("/v2/models/{name}")
@app.get("/v2/models/{name}/versions/{version}")
def model_metadata(name: str, version: str | None = None):
    _model_or_error(name, version)
    return oip.model_metadata(_service().runtime, _challenger())


@app.get("/v2/models/{name}/config")
@app.get("/v2/models/{name}/versions/{version}/config")
def model_config(name: str, version: str | None = None):
    """The model configuration (Triton's extension): the feature order is in `parameters`."""
    return oip.model_config(_model_or_error(name, version))


@app.get("/v2/models/{name}/ready")
@app.get("/v2/models/{name}/versions/{version}/ready")
def model_ready(name: str, version: str | None = None):
    _model_or_error(name, version)
    return {"name": name, "ready": True}


@app.post("/v2/models/{name}/infer", response_model=InferResponse)
@app.post("/v2/models/{name}/versions/{version}/infer", response_model=InferResponse)
async def infer(name: str, request: Request, version: str | None = None):
    """An inference request (also answered by the lean scoring path, serving/http/fast_path.py)."""
    reply = await oip_json.infer(
        _service().scorer,
        name,
        version,
        await request.body(),
        request.headers.get(oip_json.HEADER_LENGTH),
        request.scope[REQUEST_ID],  # the id the front door settled and sends back
    )
    if reply.json_length is None:
        return Response(reply.body, status_code=reply.status, media_type="application/json")
    return Response(
        reply.body,
        status_code=reply.status,
        media_type="application/octet-stream",
        headers={oip_json.HEADER_LENGTH: str(reply.json_length)},
    )


@app.get("/v1/models/{name}")
def v1_model_ready(name: str) -> dict:
    """KServe's V1 protocol: whether the model is ready."""
    kserve_v1.check_model(_service().runtime.name, name)
    return {"name": name, "ready": True}


@app.post("/v1/models/{name}:predict")
async def v1_predict(name: str, request: Request) -> Response:
    """KServe's V1 protocol: `{"instances": [...]}`, each a list of the model's features in its
    order or an object of features by name; answers `{"predictions": [...]}` (also answered by
    the lean scoring path, serving/http/fast_path.py)."""
    payload = await _service().endpoints.predict_v1(
        name, await request.body(), *request.scope[REQUEST_ID]
    )
    return Response(payload, media_type="application/json")
