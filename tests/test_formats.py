"""Structured output without the model: the format's validation, how answers are judged, its
GraphQL and wire shapes, and what a remote client sends to (or refuses for) each kind of upstream."""

from __future__ import annotations

import json

import pytest
from fakes import FakeEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_schema import context

from graphql_api.schema import schema
from inference.boundary import (
    ChatMessage,
    ChatRequest,
    Completion,
    FinishReason,
    IncompleteOutput,
    InvalidFormat,
    ResponseFormat,
    SamplingParams,
    Timings,
    Usage,
    conclude,
)
from inference.boundary.formats import MAX_CHOICES
from inference.remote import RemoteEngine
from inference.service.wire import ChatCompletionRequest, ErrorBody, parse_request

ANSWER = """
  __typename
  ... on ChatSuccess { chatId response json finishReason }
  ... on ChatError { chatId code message field partialText }
"""
BATCH = "mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { results {" + ANSWER + "} } }"


def completion(text: str, reason: FinishReason = FinishReason.STOP) -> Completion:
    return Completion(request_id="r", text=text, finish_reason=reason, usage=Usage(prompt_tokens=5, completion_tokens=7),
                      timings=Timings(queued_ms=0.0, first_token_ms=1.0, total_ms=2.0))


def request(fmt: ResponseFormat | None) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage(role="user", content="hi"),), params=SamplingParams(response_format=fmt))


@pytest.mark.parametrize(("fmt", "member", "words"), [
    (ResponseFormat(json_object=True, regex="a"), None, "exactly one member, got 2"),
    (ResponseFormat(), None, "exactly one member, got 0"),
    (ResponseFormat(choice=()), "choice", f"1 to {MAX_CHOICES} strings, got 0"),
    (ResponseFormat(choice=("a", "")), "choice", "1 to 200 characters, got 0"),
    (ResponseFormat(regex="x" * 1001), "regex", "1 to 1000 characters"),
    (ResponseFormat(json_schema="{}" + " " * 16000), "json_schema", "the limit is 16000"),
])
def test_a_format_sets_exactly_one_member_within_its_limits(fmt, member, words):
    with pytest.raises(InvalidFormat) as err:
        fmt.validate()
    assert (err.value.field, err.value.member) == ("response_format", member) and words in err.value.detail


def test_a_schema_must_be_a_json_object_nested_at_most_64_deep():
    with pytest.raises(InvalidFormat, match="must be a JSON object, got list"):
        ResponseFormat.of(json_schema=[1])
    deep: dict = {}
    for _ in range(5000):  # deeper than Python's recursion limit
        deep = {"a": [deep]}
    with pytest.raises(InvalidFormat, match="more than 64 deep"):
        ResponseFormat.of(json_schema=deep)
    assert ResponseFormat.of(json_schema={"type": "object", "title": "é"}).json_schema == '{"type":"object","title":"é"}'


def test_an_answer_is_judged_against_its_format():
    schema = ResponseFormat.of(json_schema={"type": "object"})
    assert conclude(schema, completion('{"a":[1,2]}')) == {"a": [1, 2]}
    assert conclude(None, completion("free")) is None
    assert conclude(ResponseFormat(choice=("yes", "no")), completion("yes")) is None
    with pytest.raises(IncompleteOutput) as err:
        conclude(schema, completion('{"a":[1,', FinishReason.LENGTH))
    assert err.value.partial_text == '{"a":[1,' and "token limit (7 tokens)" in err.value.message
    for fmt, text in [(schema, "{'a': 1}"), (ResponseFormat(json_object=True), "[1]"), (ResponseFormat(choice=("yes",)), "maybe"),
                      (ResponseFormat(regex="[a-z]+"), "abc")]:
        reason = FinishReason.LENGTH if fmt.regex else FinishReason.STOP
        with pytest.raises(IncompleteOutput):
            conclude(fmt, completion(text, reason))


async def test_graphql_refuses_malformed_formats_naming_options_response_format():
    inputs = [{"chatId": "two", "userPrompt": "x", "options": {"responseFormat": {"regex": "a", "choice": ["a"]}}},
              {"chatId": "none", "userPrompt": "x", "options": {"responseFormat": {"jsonObject": False}}},
              {"chatId": "list", "userPrompt": "x", "options": {"responseFormat": {"jsonSchema": [1, 2]}}},
              {"chatId": "many", "userPrompt": "x", "options": {"responseFormat": {"choice": ["a"] * 65}}},
              {"chatId": "surrogate", "userPrompt": "x", "options": {"responseFormat": {"regex": "\ud800"}}}]
    result = await schema.execute(BATCH, {"inputs": inputs}, context_value=context(FakeEngine()))
    r = result.data["chatBatched"]["results"]
    assert {x["code"] for x in r} == {"INVALID_INPUT"} and {x["field"] for x in r} == {"options.responseFormat"}
    assert [x["message"].split(" ")[0] for x in r] == ["responseFormat", "responseFormat", "responseFormat.jsonSchema",
                                                       "responseFormat.choice", "responseFormat.regex"]
    assert "exactly one member, got 2" in r[0]["message"] and "lone surrogate" in r[4]["message"]


async def test_an_answer_that_is_not_its_format_is_incomplete_output_never_a_success():
    """The fake engine ignores formats (as an upstream that does not follow them would)."""
    inputs = [{"chatId": "j", "userPrompt": "x", "options": {"responseFormat": {"jsonObject": True}}},
              {"chatId": "free", "userPrompt": "x"}]
    r = (await schema.execute(BATCH, {"inputs": inputs}, context_value=context(FakeEngine()))).data["chatBatched"]["results"]
    assert (r[0]["code"], r[0]["field"], r[0]["partialText"]) == ("INCOMPLETE_OUTPUT", "options.responseFormat", "echo: x")
    assert (r[1]["__typename"], r[1]["json"]) == ("ChatSuccess", None)


@pytest.mark.parametrize("fmt", [ResponseFormat.of(json_schema={"type": "object", "properties": {"a": {"enum": [1]}}}),
                                 ResponseFormat(json_object=True), ResponseFormat(regex=r"\d+"), ResponseFormat(choice=("a", "b"))])
def test_the_wire_carries_every_format_both_ways(fmt):
    body = ChatCompletionRequest.of(request(fmt)).body()
    assert ("response_format" in body) == fmt.is_json and ("structured_outputs" in body) != fmt.is_json
    assert parse_request(json.loads(json.dumps(body))).to_request().params.response_format == fmt


def test_the_wire_reads_openai_and_llama_cpp_shapes_and_refuses_two():
    base = {"messages": [{"role": "user", "content": "x"}]}
    read = lambda **kw: parse_request(base | kw).to_request().params.response_format
    assert read(response_format={"type": "text"}) is None
    assert read(response_format={"type": "json_object", "schema": {"type": "string"}}) == ResponseFormat(json_schema='{"type":"string"}')
    assert read(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {}}}) == ResponseFormat(json_schema="{}")
    with pytest.raises(InvalidFormat) as err:
        read(response_format={"type": "json_object"}, structured_outputs={"choice": ["a"]})
    assert ErrorBody.of(err.value).param == "response_format"
    with pytest.raises(InvalidFormat) as err:  # validated where every request is, in the engine
        read(structured_outputs={"regex": "a", "choice": ["a"]}).validate()
    assert ErrorBody.of(err.value).message == "response_format must set exactly one member, got 2"


@pytest.mark.parametrize(("owned_by", "refused"), [("vllm", set()), ("llamacpp", {"regex", "choice"}), ("someone", {"regex", "choice"})])
async def test_remote_sends_each_upstream_its_shape_and_refuses_what_it_cannot_honour(serve, owned_by, refused):
    bodies: list[dict] = []

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": owned_by}]})

    async def completions(request: Request) -> JSONResponse:
        bodies.append(await request.json())
        return JSONResponse({"id": "x", "choices": [{"message": {"content": '"a"'}, "finish_reason": "stop"}]})

    url = await serve(Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", completions, methods=["POST"])]))
    engine = RemoteEngine([url])
    await engine.start()
    try:
        formats = {"json_schema": ResponseFormat.of(json_schema={"enum": ["a"]}), "json_object": ResponseFormat(json_object=True),
                   "regex": ResponseFormat(regex="a"), "choice": ResponseFormat(choice=("a",))}
        tickets = await engine.submit([request(f) for f in formats.values()])
        got = {k: t if isinstance(t, InvalidFormat) else await t.result() for k, t in zip(formats, tickets, strict=True)}
    finally:
        await engine.stop()
    assert {k for k, v in got.items() if isinstance(v, InvalidFormat)} == refused
    for member in refused:
        assert f"response_format.{member} is not supported by the inference upstream" in got[member].message
    sent = {b.get("response_format", {}).get("type") or next(iter(b["structured_outputs"])) for b in bodies}
    assert sent == {"json_schema", "json_object", "regex", "choice"} - refused
    assert any(b.get("response_format", {}).get("json_schema", {}).get("schema") == {"enum": ["a"]} for b in bodies)
