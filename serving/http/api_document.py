"""The API document (GET /docs.json, shown by /docs): BentoML's document of the typed endpoints
and the mounted routes, given the project's title, description and version (the served model's
tag) however the service is served, its endpoints grouped by purpose, and an example on every
scoring route built from the model's own contract (so it is always a valid request).

BentoML titles the document after the service, describes it with the Bento's README (or its own
default text with badges from external hosts when served from a directory), versions it "None"
outside a built Bento and names "BentoML Team" as the contact; it puts the project's own routes
under "default". This middleware answers GET /docs.json inside BentoML's stack, behind the same
security checks as the route it replaces.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from model_store.contract import FeatureSchema
from serving.contract import rules
from serving.http import routes

DOCUMENT_PATH = "/docs.json"
TITLE = "fraud-bento"
DESCRIPTION = """Scores payment transactions with the pinned fraud model.

- **Scoring**: `/predict` takes transactions as rows of the model's features, `/predict_columns`
  the same as columns; each answers a fraud probability and a decision at the model's threshold.
  `/score` takes raw payments (id, time, card, terminal, amount) and computes their features
  from the online state, as training computes them; `/score_columns` the same as columns.
- **Explanations and labels**: `/explain` gives SHAP contributions, `/feedback` takes delayed
  labels for earlier predictions.
- **Open Inference Protocol** (KServe v2) under `/v2`: JSON or binary tensors; the same over gRPC.
  KServe's V1 protocol (its SDK's default): `/v1/models/fraud_rf:predict` with `instances`.
- **Model**: `/model_info` lists the features with their types and ranges; `/challenger`.
- **Monitoring**: `/drift`, `/stats` and Prometheus metrics on `/metrics`.

Every answer carries `X-Request-ID` (yours when you send one). With API keys configured, send
`Authorization: Bearer KEY` or `X-API-Key: KEY`."""


def examples(schema: FeatureSchema, payment: dict | None) -> dict[str, dict]:
    """A request body for each scoring route (`payment`: one for /score, when it applies)."""
    row = rules.example_row(schema)
    values = [row[name] for name in schema.names]
    return {
        **(
            {
                "/score": {"payments": [payment], "include_features": True},
                "/score_columns": {"columns": list(payment), "data": [list(payment.values())]},
            }
            if payment
            else {}
        ),
        "/predict": {"transactions": [row]},
        "/predict_columns": {
            "columns": schema.names,
            "data": [values],
            "transaction_ids": ["tx-1"],
        },
        "/explain": {"transactions": [row], "top_k": 3},
        "/v1/models/{name}:predict": {"instances": [values]},
        "/v2/models/{name}/infer": {
            "id": "request-1",
            "inputs": [
                {"name": "features", "datatype": "FP32", "shape": [1, len(values)], "data": values}
            ],
        },
    }


def document(
    base: dict, model_tag: str, schema: FeatureSchema, payment: dict | None = None
) -> dict:
    """BentoML's document made the project's own."""
    spec = dict(base)
    spec["info"] = {"title": TITLE, "description": DESCRIPTION, "version": model_tag}
    spec["tags"] = [{"name": name, "description": text} for name, text in routes.GROUPS]
    bodies = examples(schema, payment)
    for path, item in spec["paths"].items():
        for operation in item.values():
            operation["tags"] = [routes.group_of(path)]
        example = bodies.get(path.replace("/versions/{version}", ""))
        if example is not None and "post" in item:
            request = item["post"].setdefault("requestBody", {"required": True, "content": {}})
            content = request["content"].setdefault("application/json", {"schema": {}})
            content["example"] = example
    return spec


class ApiDocumentMiddleware:
    """Answers GET /docs.json with `render()`, computed once per worker."""

    def __init__(self, app, render: Callable[[], dict]):
        self.app = app
        self._render = render
        self._body: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        if not (
            scope["type"] == "http" and scope["path"] == DOCUMENT_PATH and scope["method"] == "GET"
        ):
            await self.app(scope, receive, send)
            return
        if self._body is None:
            self._body = json.dumps(self._render()).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self._body})
