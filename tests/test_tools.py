"""Tool calling with the real model: calls constrained to the tools' schemas (REQUIRED, a named
tool), a tool's result answered in text, bad tools refused by name without touching the rest of a
batch; the service in OpenAI's shape through the official client; the remote client passing tools on."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from conftest import SYSTEM, chat, engine_like
from test_api_http import post

from inference.boundary import ChatMessage, ChatRequest, Completion, FinishReason, SamplingParams, Tool, ToolCall, ToolMode, Tools
from inference.boundary.request import prompt_messages
from inference.boundary.tools import parse_calls
from inference.engine.async_engine import AsyncEngine
from inference.remote import RemoteEngine
from inference.service.app import ServiceSettings, create_service

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"], "additionalProperties": False}
TOOLS = [{"name": "get_weather", "description": "Get the current weather in a city", "parameters": WEATHER},
         {"name": "get_time", "description": "Get the current time in a timezone", "parameters": TIME}]
SCHEMAS = {t["name"]: t["parameters"] for t in TOOLS}
ASK = ("mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { results { __typename "
       "... on ChatSuccess { chatId response finishReason toolCalls { id name arguments } } "
       "... on ChatError { chatId code field message } } } }")


def test_calls_are_read_from_the_hermes_tags_and_the_history_is_rendered_for_a_template_without_tools():
    text, calls = parse_calls('<tool_call>\n{"name": "get_time", "arguments": {"timezone": "CET"}}\n</tool_call>')
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_time", {"timezone": "CET"})]
    assert parse_calls("no call here") == ("no call here", ())
    assert parse_calls("<tool_call>{broken</tool_call>")[1] == ()
    tools = Tools(tools=(Tool.of("get_time", "the time", TIME, 0),))
    call = ToolCall(id="call_1", name="get_time", arguments='{"timezone": "CET"}')
    request = ChatRequest(messages=(ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Time in Paris?"),
                           ChatMessage(role="assistant", content="", tool_calls=(call,)),
                           ChatMessage(role="tool", content="12:00", tool_call_id="call_1")), tools=tools)
    turns = prompt_messages(request)
    assert turns[0].content.startswith("Be brief.\n\nYou are a function calling AI model") and '"get_time"' in turns[0].content
    assert turns[2].content == '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "CET"}}\n</tool_call>'
    assert turns[3] == ChatMessage(role="tool", content="<tool_response>\n12:00\n</tool_response>")
    none = ChatRequest(messages=request.messages[:2], tools=Tools(tools=tools.tools, mode=ToolMode.NONE))
    assert prompt_messages(none)[0].content == "Be brief."


async def test_graphql_required_and_named_calls_are_valid_then_the_result_is_answered_and_plain_chats_keep_their_text(live, engine):
    plain = {"chatId": "plain", "userPrompt": "What is the capital of France?", "options": {"maxTokens": 12}}
    inputs = [{"chatId": "req", "userPrompt": "What's the weather like in Paris today?", "tools": TOOLS,
               "toolChoice": {"mode": "REQUIRED"}, "options": {"maxTokens": 60}},
              plain,
              {"chatId": "named", "userPrompt": "I am flying to Tokyo tomorrow.", "tools": TOOLS,
               "toolChoice": {"tool": "get_time"}, "options": {"maxTokens": 60}}]
    results = {r["chatId"]: r for r in (await post(live, ASK, {"inputs": inputs})).json()["data"]["chatBatched"]["results"]}
    for chat_id in ("req", "named"):
        r = results[chat_id]
        assert r["__typename"] == "ChatSuccess" and r["finishReason"] == "TOOL_CALLS", r
        [call] = r["toolCalls"]
        jsonschema.validate(call["arguments"], SCHEMAS[call["name"]])
    assert results["named"]["toolCalls"][0]["name"] == "get_time"
    alone = await engine.generate(chat("What is the capital of France?", max_new_tokens=12))
    assert results["plain"]["response"] == alone.text and results["plain"]["toolCalls"] == []
    call = results["req"]["toolCalls"][0]
    # NONE: the model is offered no call and answers from the result (in AUTO the 135M model tends to call again).
    second = {"chatId": "turn2", "userPrompt": "", "tools": TOOLS, "toolChoice": {"mode": "NONE"}, "options": {"maxTokens": 40},
              "history": [{"role": "USER", "content": "What's the weather like in Paris today?"},
                          {"role": "ASSISTANT", "content": "", "toolCalls": [call]},
                          {"role": "TOOL", "content": json.dumps({"city": "Paris", "sky": "sunny", "celsius": 24}),
                           "toolCallId": call["id"]}]}
    [answer] = (await post(live, ASK, {"inputs": [second]})).json()["data"]["chatBatched"]["results"]
    assert answer["__typename"] == "ChatSuccess" and answer["finishReason"] in ("STOP", "LENGTH") and answer["response"].strip()
    assert answer["toolCalls"] == []


async def test_bad_tools_are_invalid_input_naming_the_tool_and_the_rest_of_the_batch_is_answered(live):
    def item(chat_id: str, tools: list) -> dict:
        return {"chatId": chat_id, "userPrompt": "Weather in Oslo?", "tools": tools, "toolChoice": {"mode": "REQUIRED"},
                "options": {"maxTokens": 80}}
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(6_000)}}  # 0.8 MB (bodies: 1 MB)
    inputs = [item("schema", [TOOLS[0], {"name": "broken", "parameters": {"type": "object", "properties": {"a": {"type": "strin"}}}}]),
              item("twice", [TOOLS[0], TOOLS[0]]),
              item("many", [{"name": f"t{i}"} for i in range(129)]),
              item("huge", [{"name": "big", "parameters": huge}]),
              item("unknown", TOOLS) | {"toolChoice": {"tool": "get_stock"}},
              item("good", TOOLS)]
    body = {"query": ASK, "variables": {"inputs": inputs}}
    async with httpx.AsyncClient(timeout=120) as client:
        reply = (await client.post(f"{live.url}/graphql", json=body)).json()
    assert "errors" not in reply, str(reply)[:500]
    results = {r["chatId"]: r for r in reply["data"]["chatBatched"]["results"]}
    assert results["schema"]["code"] == "INVALID_INPUT" and results["schema"]["field"] == "tools[1].parameters"
    assert "broken" in results["schema"]["message"]
    assert results["twice"]["field"] == "tools[1].name" and results["many"]["field"] == "tools"
    assert results["huge"]["field"] == "tools[0].parameters" and "limit" in results["huge"]["message"]
    assert results["unknown"]["field"] == "toolChoice"
    assert results["good"]["__typename"] == "ChatSuccess" and results["good"]["finishReason"] == "TOOL_CALLS", results["good"]


@pytest.fixture
async def service(llm, serve):
    return await serve(create_service(AsyncEngine(engine_like(llm)), ServiceSettings()))


async def test_the_openai_client_gets_tool_calls_unary_and_streamed_and_sends_the_result_back(service):
    client = openai.AsyncOpenAI(base_url=f"{service}/v1", api_key="none", http_client=httpx.AsyncClient(timeout=120))
    tools = [{"type": "function", "function": t} for t in TOOLS]
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What's the weather like in Paris today?"}]
    reply = await client.chat.completions.create(model="m", messages=messages, tools=tools, tool_choice="required",
                                                 max_tokens=60, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    named = await client.chat.completions.create(model="m", messages=messages, tools=tools, max_tokens=60, temperature=0,
                                                 tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"
    stream = await client.chat.completions.create(model="m", messages=messages, tools=tools, tool_choice="required",
                                                  max_tokens=60, temperature=0, stream=True)
    streamed, content, finish = [], "", None
    async for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            streamed += c.delta.tool_calls or []
            finish = c.finish_reason or finish
    assert content == "" and finish == "tool_calls" and [(d.function.name, d.function.arguments) for d in streamed] == \
        [(call.function.name, call.function.arguments)]
    follow = [*messages, choice.message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny", "celsius": 24}'}]
    answer = await client.chat.completions.create(model="m", messages=follow, tools=tools, tool_choice="none",
                                                  max_tokens=40, temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model="m", messages=messages, max_tokens=4, tools=[
            {"type": "function", "function": {"name": "bad name!"}}])
    assert refused.value.body["param"] == "tools[0].name"


async def test_the_remote_client_passes_tools_to_its_upstream(service):
    remote = RemoteEngine([service])
    await remote.start()
    try:
        tools = Tools(tools=tuple(Tool.of(t["name"], t["description"], t["parameters"], i) for i, t in enumerate(TOOLS)), mode=ToolMode.REQUIRED)
        request = ChatRequest(messages=(ChatMessage(role="user", content="What's the weather like in Paris today?"),),
                              params=SamplingParams(max_new_tokens=60), tools=tools)
        [ticket] = await remote.submit([request])
        result = await ticket.result()
        assert isinstance(result, Completion) and result.finish_reason is FinishReason.TOOL_CALLS
        jsonschema.validate(json.loads(result.tool_calls[0].arguments), SCHEMAS[result.tool_calls[0].name])
        final = None
        async for event in remote.stream(request):
            final = event
        assert isinstance(final, Completion) and final.tool_calls[0].name == result.tool_calls[0].name
    finally:
        await remote.stop()


async def test_chat_stream_streams_the_calls_text_and_ends_with_the_parsed_call(live):
    from httpx_sse import aconnect_sse

    query = ("subscription($input: ChatInput!) { chatStream(input: $input) { __typename ... on ChatToken { delta choice } "
             "... on ChatSuccess { response finishReason toolCalls { name arguments } } ... on ChatError { code message } } }")
    payload = {"query": query, "variables": {"input": {"chatId": "ts", "userPrompt": "What time is it in Oslo?", "tools": TOOLS,
                                                       "toolChoice": {"tool": "get_time"}, "options": {"maxTokens": 60}}}}
    events = []
    async with httpx.AsyncClient(timeout=60) as client:
        async with aconnect_sse(client, "POST", f"{live.url}/graphql", json=payload) as source:
            async for sse in source.aiter_sse():
                if sse.event == "next":
                    events.append(json.loads(sse.data)["data"]["chatStream"])
    final = events[-1]
    assert final["__typename"] == "ChatSuccess" and final["finishReason"] == "TOOL_CALLS", final
    text = "".join(e["delta"] for e in events[:-1])
    _, [call] = parse_calls(text)
    assert final["toolCalls"] == [{"name": "get_time", "arguments": json.loads(call.arguments)}] and final["response"] == ""
    jsonschema.validate(final["toolCalls"][0]["arguments"], TIME)
