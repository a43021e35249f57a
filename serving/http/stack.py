"""What a service adds to BentoML's HTTP stack, in one place: the security checks, the API
document and the front door, which at start-up puts itself before the whole stack and answers
the scoring routes through its own layers (the same security checks, then BentoML's access log
and spans when the settings ask for them). The security middleware is one instance per path:
BentoML's stack for every other route, the front door's layers for scoring."""

from __future__ import annotations

from collections.abc import Callable

import bentoml_internals
from model_store.contract import FeatureSchema
from serving.http import api_document, early_refusal, fast_path, security
from serving.http.endpoints import ScoringEndpoints
from serving.payments.payment_requests import example_payment
from settings import ColumnsConfig, SecurityConfig, ServingConfig


def install(
    service,
    guard: security.Guard,
    config: SecurityConfig,
    serving: ServingConfig,
    endpoints: Callable[[], ScoringEndpoints],
    model_tag: str,
    features: FeatureSchema,
    payment_columns: ColumnsConfig | None,
) -> None:
    """Add the middlewares to a @bentoml.service class (`service`); `endpoints` gives the
    worker's scoring handlers once it exists."""
    checks = {
        "guard": guard,
        "max_body_bytes": config.max_body_bytes,
        "metrics_open": config.metrics_open,
    }
    service.add_asgi_middleware(security.SecurityMiddleware, **checks)
    bentoml_internals.document_validation_errors()  # the 400 the document names, as sent
    example = example_payment(payment_columns, features) if payment_columns else None
    service.add_asgi_middleware(
        api_document.ApiDocumentMiddleware,
        render=lambda: api_document.document(
            service.openapi_spec.asdict(), model_tag, features, example
        ),
    )
    layers = [lambda app: security.SecurityMiddleware(app, **checks)]  # innermost first
    if serving.access_log:
        layers.append(bentoml_internals.access_log)
    if serving.trace_scoring:
        layers.append(bentoml_internals.tracing)
    bentoml_internals.serve_http_with(f"{early_refusal.__name__}:EarlyRefusalProtocol")
    service.add_asgi_middleware(
        fast_path.FrontDoor.install,
        endpoints=endpoints,
        lean=serving.fast_path,
        timeout_s=serving.request_timeout_s,
        layers=layers,
    )
