"""The route table: each route's own paths find that route and no other (a path parameter never
swallows a neighbour's suffix), and the scoring routes are found for a POST only."""

from __future__ import annotations

import re

import pytest

from serving.http import routes


def _concrete(route: routes.Route) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: f"a-{m.group(1)}.1", route.path)


@pytest.mark.parametrize("route", routes.ROUTES, ids=lambda r: r.path)
def test_each_route_finds_its_own_paths(route):
    found, params = routes.find(_concrete(route))
    assert found is route
    assert set(params) == set(re.findall(r"\{(\w+)\}", route.path))


def test_the_scoring_routes_are_found_for_a_post_only():
    for route in routes.SCORING_ROUTES:
        path = _concrete(route)
        assert routes.scoring("POST", path)[0] is route
        assert routes.scoring("GET", path) is None
    assert routes.scoring("POST", "/v1/models/fraud_rf") is None  # readiness, not predict
    assert routes.scoring("POST", "/v2/models/fraud_rf/infer/more") is None
    assert routes.find("/nowhere") is None
