"""Schemathesis in GraphQL mode against the app: no 5xx, and no internal error, for any query it
generates. The engine is the fake one: this is about the API's handling of input."""

from __future__ import annotations

import schemathesis
from fakes import FakeEngine
from hypothesis import HealthCheck, settings

from graphql_api.app import create_app
from graphql_api.settings import ApiSettings

app = create_app(ApiSettings(), engine=FakeEngine())
schema = schemathesis.graphql.from_asgi("/graphql", app)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_queries_never_get_a_5xx_or_an_internal_error(case):
    response = case.call()
    assert response.status_code < 500, response.text
    body = response.json()
    internal = [e for e in body.get("errors") or () if (e.get("extensions") or {}).get("code") == "INTERNAL"]
    assert not internal, internal
