"""What this bundle takes from BentoML's private modules (`bentoml._internal`), in one place.

BentoML's public API has no way to reach these, and its private modules change without notice:
when BentoML is upgraded, this module is the one list to check (tests/service exercises each).
- the model store's home directory (BENTOML_HOME), to name it in an error;
- the metric namespace, latency buckets and service context of BentoML's own request metrics,
  which the lean scoring path records for the requests it answers in front of BentoML;
- its access-log and OpenTelemetry middlewares, configured as BentoML configures its own, for
  the lean scoring path when `serving.access_log` / `serving.trace_scoring` ask for them;
- the OpenAPI schema of a 400, corrected to the body BentoML actually sends;
- the logger on which BentoML writes a traceback for every request that raised;
- the HTTP protocol class of the uvicorn server BentoML starts, which BentoML does not let a
  service choose.

The ground floor, beside settings.py: it imports nothing of this project.
"""

from __future__ import annotations

from pathlib import Path

# BentoML logs a full traceback for every request that raised, 400s and 503s included.
REQUEST_ERRORS_LOGGER = "bentoml._internal.server.http_app"


def home() -> Path:
    """BentoML's home (BENTOML_HOME): its model store and Bentos."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get())


def request_metrics_config() -> tuple[str, list[float]]:
    """The namespace and latency buckets of BentoML's request metrics."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    namespace = BentoMLContainer.api_server_config.metrics.namespace.get()
    return namespace, BentoMLContainer.duration_buckets.get()


def server_context():
    """BentoML's per-process service context: bento and service names and version."""
    from bentoml._internal.context import server_context

    return server_context


def access_log(app):
    """BentoML's access log line for each request to `app`, configured as BentoML configures
    its own (`logging.access` in BentoML's configuration)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.server.http.access import AccessLogMiddleware

    config = BentoMLContainer.api_server_config.logging.access
    return AccessLogMiddleware(
        app,
        has_request_content_length=config.request_content_length.get(),
        has_request_content_type=config.request_content_type.get(),
        has_response_content_length=config.response_content_length.get(),
        has_response_content_type=config.response_content_type.get(),
    )


def tracing(app):
    """BentoML's OpenTelemetry span for each request to `app`, with its tracer and request-id
    hook (so log lines carry the span's id, as on BentoML's routes)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.context import trace_context
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    def server_request_hook(span, _scope) -> None:
        if span.context is not None:
            trace_context.request_id = span.context.span_id

    return OpenTelemetryMiddleware(
        app,
        default_span_details=None,
        server_request_hook=server_request_hook,
        tracer_provider=BentoMLContainer.tracer_provider.get(),
    )


def document_validation_errors() -> None:
    """BentoML's OpenAPI document says a 400's body is `{"error": str, "detail": str}`, but a
    request that fails validation gets pydantic's list of errors as `detail` and no `error`:
    document the body that is actually sent (BentoML's schema objects are shared and cached)."""
    from bentoml._internal.service.openapi.specification import Schema
    from bentoml._internal.service.openapi.utils import exception_components_schema

    invalid = exception_components_schema()["InvalidArgument"]
    error_item = Schema(
        type="object",
        properties={
            "loc": Schema(
                type="array", items=Schema(anyOf=[Schema(type="string"), Schema(type="integer")])
            ),
            "msg": Schema(type="string"),
            "type": Schema(type="string"),
        },
    )
    invalid.properties["detail"] = Schema(
        title="Error Detail",
        anyOf=[Schema(type="string"), Schema(type="array", items=error_item)],
    )
    invalid.required.clear()


def serve_http_with(protocol: str) -> None:
    """Make `protocol` ("module:Class", a subclass of uvicorn's httptools protocol) the HTTP
    protocol of the uvicorn server BentoML starts in this process. BentoML builds uvicorn's
    Config with its default protocol ("auto") and no option to choose: the name "auto" is
    pointed at this class before the server loads it."""
    import uvicorn.config

    uvicorn.config.HTTP_PROTOCOLS["auto"] = protocol
