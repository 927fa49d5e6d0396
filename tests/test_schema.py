"""API shape through schema.execute / schema.subscribe with the fake engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeEngine
from strawberry.printer import print_schema

from graphql_api.schema import build_schema, schema
from graphql_api.schema.context import Context
from graphql_api.schema.loaders import ChatLoader
from graphql_api.settings import ApiSettings

ROOT = Path(__file__).resolve().parent.parent

RESULT_FIELDS = """
  __typename
  ... on ChatSuccess { chatId response finishReason usage { promptTokens completionTokens totalTokens } }
  ... on ChatError { chatId code message field }
"""
BATCH = "mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { succeeded failed partialSuccess results {" + RESULT_FIELDS + "} } }"
CHAT = "mutation($input: ChatInput!) { chat(input: $input) {" + RESULT_FIELDS + "} }"


def context(engine: FakeEngine, **settings) -> Context:
    return Context(engine=engine, loader=ChatLoader(engine), settings=ApiSettings(**settings),
                   request_id="req-1", started_at=0.0)


def test_schema_graphql_matches_the_code():
    """Regenerate with `make schema` when this fails."""
    assert (ROOT / "schema.graphql").read_text() == print_schema(schema) + "\n"


async def test_chat_answers_with_a_success():
    engine = FakeEngine()
    result = await schema.execute(CHAT, {"input": {"chatId": "a", "userPrompt": "hi"}}, context_value=context(engine))
    assert result.errors is None
    assert result.data["chat"] == {"__typename": "ChatSuccess", "chatId": "a", "response": "echo: hi",
                                   "finishReason": "STOP",
                                   "usage": {"promptTokens": 3, "completionTokens": 2, "totalTokens": 5}}


async def test_chat_batched_of_16_is_one_engine_call_of_16():
    engine = FakeEngine()
    inputs = [{"chatId": str(i), "userPrompt": f"p{i}"} for i in range(16)]
    result = await schema.execute(BATCH, {"inputs": inputs}, context_value=context(engine))
    assert result.errors is None
    assert engine.batch_calls == [16]
    assert [r["response"] for r in result.data["chatBatched"]["results"]] == [f"echo: p{i}" for i in range(16)]


async def test_bad_items_get_errors_as_data_and_valid_ones_are_answered_in_order():
    engine = FakeEngine()
    inputs = [
        {"chatId": "ok1", "userPrompt": "first"},
        {"chatId": "  ", "userPrompt": "blank id"},
        {"chatId": "empty", "userPrompt": ""},
        {"chatId": "blank", "userPrompt": " \n "},
        {"chatId": "ok1", "userPrompt": "duplicate"},
        {"chatId": "hot", "userPrompt": "x", "options": {"temperature": 5.0}},
        {"chatId": "many", "userPrompt": "x", "options": {"maxTokens": 100000}},
        {"chatId": "huge", "userPrompt": "x" * 40000},
        {"chatId": "ok2", "userPrompt": "second"},
    ]
    result = await schema.execute(BATCH, {"inputs": inputs}, context_value=context(engine))
    batch = result.data["chatBatched"]
    r = batch["results"]
    assert (batch["succeeded"], batch["failed"], batch["partialSuccess"]) == (2, 7, True)
    assert r[0]["response"] == "echo: first" and r[8]["response"] == "echo: second"
    assert (r[1]["chatId"], r[1]["code"], r[1]["field"]) == ("  ", "INVALID_INPUT", "chatId")
    assert (r[2]["code"], r[2]["field"]) == ("INVALID_INPUT", "userPrompt")
    assert (r[3]["code"], r[3]["field"]) == ("INVALID_INPUT", "userPrompt")
    assert (r[4]["chatId"], r[4]["code"], r[4]["field"]) == ("ok1", "DUPLICATE_CHAT_ID", "chatId")
    assert (r[5]["code"], r[5]["field"]) == ("INVALID_INPUT", "options.temperature")
    assert "between 0 and 2" in r[5]["message"]
    assert (r[6]["field"], "1024" in r[6]["message"]) == ("options.maxTokens", True)
    assert (r[7]["field"], "32000" in r[7]["message"]) == ("userPrompt", True)
    assert engine.batch_calls == [4]  # the two valid ones, and the two rejected by the engine's own checks


async def test_all_invalid_batch_is_not_partial_success():
    result = await schema.execute(BATCH, {"inputs": [{"chatId": "", "userPrompt": ""}]},
                                  context_value=context(FakeEngine()))
    assert result.data["chatBatched"]["partialSuccess"] is False
    assert result.data["chatBatched"]["failed"] == 1


async def test_batch_over_the_limit_is_refused_whole_with_a_coded_error():
    inputs = [{"chatId": str(i), "userPrompt": "x"} for i in range(5)]
    engine = FakeEngine()
    result = await schema.execute(BATCH, {"inputs": inputs}, context_value=context(engine, max_batch_items=4))
    assert result.data is None
    [error] = result.errors
    assert error.extensions["code"] == "BATCH_TOO_LARGE" and "at most 4" in error.message
    assert engine.batch_calls == []


async def test_unexpected_errors_are_masked_with_the_request_id(caplog):
    result = await schema.execute(CHAT, {"input": {"chatId": "a", "userPrompt": "hi"}},
                                  context_value=context(FakeEngine(fail_with=RuntimeError("secret detail"))))
    [error] = result.errors
    assert "secret" not in error.message and "req-1" in error.message
    assert error.extensions == {"code": "INTERNAL", "requestId": "req-1"}
    assert "secret detail" in caplog.text


async def test_stream_yields_tokens_then_success():
    sub = await schema.subscribe(
        "subscription { chatStream(input: {chatId: \"s\", userPrompt: \"one two\"}) { __typename "
        "... on ChatToken { chatId index delta } ... on ChatSuccess { response } } }",
        context_value=context(FakeEngine()))
    events = [e.data["chatStream"] async for e in sub]
    tokens = [e for e in events if e["__typename"] == "ChatToken"]
    assert [t["index"] for t in tokens] == [0, 1, 2]
    assert "".join(t["delta"] for t in tokens) == events[-1]["response"] == "echo: one two"


async def test_stream_of_invalid_input_yields_one_chat_error():
    sub = await schema.subscribe(
        "subscription { chatStream(input: {chatId: \"s\", userPrompt: \"x\", options: {topP: 0}}) "
        "{ __typename ... on ChatError { code field } } }", context_value=context(FakeEngine()))
    events = [e.data["chatStream"] async for e in sub]
    assert events == [{"__typename": "ChatError", "code": "INVALID_INPUT", "field": "options.topP"}]


async def test_health_and_model():
    result = await schema.execute("{ health { ready running waiting } model { name contextLength limits { maxBatchItems maxTokens } } }",
                                  context_value=context(FakeEngine()))
    assert result.data["model"] == {"name": "fake", "contextLength": 2048, "limits": {"maxBatchItems": 64, "maxTokens": 1024}}
    assert result.data["health"] == {"ready": False, "running": 0, "waiting": 0}


@pytest.mark.parametrize("query, words", [
    ("{ " + " ".join(f"a{i}: health {{ ready }}" for i in range(30)) + " }", "aliases"),
    ("{ model { limits { maxTokens } } }", None),
])
async def test_alias_limit(query: str, words: str | None):
    result = await build_schema(ApiSettings()).execute(query, context_value=context(FakeEngine()))
    if words is None:
        assert result.errors is None
    else:
        assert words in result.errors[0].message


async def test_introspection_can_be_switched_off():
    result = await build_schema(ApiSettings(introspection=False)).execute("{ __schema { types { name } } }")
    assert result.errors and "introspection" in result.errors[0].message.lower()


async def test_depth_limit():
    """The schema is only 3 levels deep (depth counts from 0), so the limit is shown with a lower setting."""
    schema_ = build_schema(ApiSettings(max_query_depth=1))
    result = await schema_.execute("{ model { limits { maxTokens } } }", context_value=context(FakeEngine()))
    assert "exceeds maximum operation depth of 1" in result.errors[0].message
    assert (await schema_.execute("{ model { name } }", context_value=context(FakeEngine()))).errors is None
