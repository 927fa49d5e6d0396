"""Schemathesis in GraphQL mode against the app: no 5xx, and no internal error, for any query it
generates. The engine is the fake one: this is about the API's handling of input."""

from __future__ import annotations

import schemathesis
from fakes import FakeEngine
from graphql.language import (
    BooleanValueNode,
    IntValueNode,
    ListValueNode,
    NameNode,
    NullValueNode,
    ObjectFieldNode,
    ObjectValueNode,
    StringValueNode,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from graphql_api.app import create_app
from graphql_api.settings import ApiSettings

# The JSON scalar (schemas, tool arguments): any JSON value, written as GraphQL literals.
leaves = st.one_of(st.text(max_size=8).map(lambda v: StringValueNode(value=v)),
                   st.integers(-10, 10).map(lambda v: IntValueNode(value=str(v))),
                   st.booleans().map(lambda v: BooleanValueNode(value=v)), st.just(NullValueNode()))
schemathesis.graphql.scalar("JSON", st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda v: ListValueNode(values=tuple(v))),
    st.dictionaries(st.sampled_from(["type", "properties", "a", "required"]), inner, max_size=3).map(
        lambda d: ObjectValueNode(fields=tuple(ObjectFieldNode(name=NameNode(value=k), value=v) for k, v in d.items())))),
    max_leaves=6))
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
