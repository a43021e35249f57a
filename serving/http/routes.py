"""Every HTTP route of a worker, declared once: its path, its group in the API document, whether
it needs a key, and for the scoring routes the handler that answers them, the protocol their
requests and refusals are counted under and the bodies they take.

Read by every layer that treats routes apart: the front door answers the scoring routes itself and
sends the rest down BentoML's stack (serving/http/fast_path.py); the security checks take each
route's key and media-type rules (serving/http/security.py); BentoML's access log and tracing
skip the scoring routes unless the settings ask for them (service.py); the API document groups
its paths by this table (serving/http/api_document.py). A scoring route's handler is the
`ScoringEndpoints` method of that name, which the typed @bentoml.api endpoints and the mounted
routes reach too: the tests hold every path of the API document to this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from serving.payments import payment_requests
from serving.protocols import codec, kserve_v1, oip_json

SCORING = "scoring"
EXPLANATIONS = "explanations and labels"
OIP = "Open Inference Protocol"
MODEL = "model"
MONITORING = "monitoring"
HEALTH = "health"
# The API document's groups, in its order: (name, description).
GROUPS = (
    (SCORING, "Score transactions."),
    (EXPLANATIONS, "Why a score, and what happened."),
    (OIP, "KServe v2 over HTTP (gRPC on its own port), and KServe's V1 protocol."),
    (MODEL, "What is served."),
    (MONITORING, "Drift, figures and metrics."),
    (HEALTH, "Probes."),
)
METRICS = "/metrics"
# A path parameter (a model's name or version): no "/" and no ":", so that
# `/v1/models/{name}` is not also `/v1/models/{name}:predict`.
PARAMETER = r"[^/:]+"


@dataclass(frozen=True)
class Route:
    path: str  # as documented: "{name}" is a path parameter
    group: str
    handler: str | None = None  # a scoring route: the ScoringEndpoints method answering its POST
    protocol: str = codec.PROTOCOL  # the label its requests and refusals are counted under
    binary: bool = False  # also takes OIP's binary tensors (application/octet-stream)
    keyed: bool = True  # needs an API key when keys are configured
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+)\}", self.path)  # literal, name, literal, name, ...
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>{PARAMETER})"
            for i, part in enumerate(parts)
        )
        object.__setattr__(self, "pattern", re.compile(regex))

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when `path` is this route's, else None."""
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found is not None else None


ROUTES = (
    Route("/predict", SCORING, handler="predict"),
    Route("/predict_columns", SCORING, handler="predict_columns"),
    Route("/score", SCORING, handler="score", protocol=payment_requests.PROTOCOL),
    Route("/score_columns", SCORING, handler="score_columns", protocol=payment_requests.PROTOCOL),
    Route("/explain", EXPLANATIONS),
    Route("/feedback", EXPLANATIONS),
    Route("/v2", OIP),
    Route("/v2/models/{name}", OIP),
    Route("/v2/models/{name}/versions/{version}", OIP),
    Route("/v2/models/{name}/config", OIP),
    Route("/v2/models/{name}/versions/{version}/config", OIP),
    Route("/v2/models/{name}/ready", OIP),
    Route("/v2/models/{name}/versions/{version}/ready", OIP),
    Route("/v2/models/{name}/infer", OIP, handler="infer", protocol=oip_json.PROTOCOL, binary=True),
    Route(
        "/v2/models/{name}/versions/{version}/infer",
        OIP,
        handler="infer",
        protocol=oip_json.PROTOCOL,
        binary=True,
    ),
    Route("/v1/models/{name}", OIP),
    Route("/v1/models/{name}:predict", OIP, handler="predict_v1", protocol=kserve_v1.PROTOCOL),
    Route("/model_info", MODEL),
    Route("/challenger", MODEL),
    Route("/drift", MONITORING),
    Route("/stats", MONITORING),
    Route(METRICS, MONITORING),  # open too when security.metrics_open
    Route("/health", HEALTH),
    Route("/healthz", HEALTH),  # BentoML's own probes, from here down
    Route("/livez", HEALTH, keyed=False),
    Route("/readyz", HEALTH, keyed=False),
    Route("/v2/health/live", HEALTH, keyed=False),
    Route("/v2/health/ready", HEALTH, keyed=False),
)
SCORING_ROUTES = tuple(route for route in ROUTES if route.handler is not None)
OPEN_PATHS = frozenset(route.path for route in ROUTES if not route.keyed)
_DECLARED = {route.path: route for route in ROUTES}
_EXACT = {route.path: route for route in ROUTES if "{" not in route.path}
_PARAMETRIC = tuple(route for route in ROUTES if "{" in route.path)


def find(path: str) -> tuple[Route, dict[str, str]] | None:
    """The route a request path is, and its path parameters; None: no route of this table."""
    route = _EXACT.get(path)
    if route is not None:
        return route, {}
    if path.startswith(("/v2/", "/v1/")):  # every parametric route is under one of these
        for route in _PARAMETRIC:
            params = route.match(path)
            if params is not None:
                return route, params
    return None


def scoring(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The scoring route a request is (a POST to one), else None."""
    if method != "POST":
        return None
    found = find(path)
    return found if found is not None and found[0].handler is not None else None


def unlogged_prefixes() -> list[str]:
    """What BentoML's access log and tracing leave out when the settings keep the scoring routes
    quiet: each scoring route's path up to its first parameter (BentoML matches prefixes)."""
    return sorted({route.path.split("{", 1)[0] for route in SCORING_ROUTES})


def group_of(path: str) -> str:
    """A documented path's group (the document names paths as this table does, and holds no
    other: tests/service/test_pipeline.py)."""
    return _DECLARED[path].group
