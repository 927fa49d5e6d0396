"""The GraphQL API over real HTTP, SSE and WebSocket, with the real model."""

from __future__ import annotations

import asyncio
import json

import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect

from inference.engine.config import EngineConfig

RESULT = """__typename
  ... on ChatSuccess { chatId response finishReason usage { completionTokens } }
  ... on ChatError { chatId code message field }"""
CHAT = "mutation($input: ChatInput!) { chat(input: $input) { " + RESULT + " } }"
BATCH = "mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { succeeded failed partialSuccess results { " + RESULT + " } } }"
STREAM = ("subscription($input: ChatInput!) { chatStream(input: $input) { __typename "
          "... on ChatToken { index delta } ... on ChatSuccess { response finishReason } ... on ChatError { code message } } }")


async def post(live, query: str, variables: dict | None = None, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(timeout=120) as client:
        return await client.post(f"{live.url}/graphql", json={"query": query, "variables": variables or {}}, **kwargs)


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_chat_over_http_answers_paris_and_returns_a_request_id(live):
    response = await post(live, CHAT, {"input": {"chatId": "c1", "userPrompt": "What is the capital of France?"}},
                          headers={"x-request-id": "my-trace-42"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "my-trace-42"
    chat = response.json()["data"]["chat"]
    assert chat["__typename"] == "ChatSuccess" and chat["chatId"] == "c1"
    assert "Paris" in chat["response"] and chat["finishReason"] == "STOP"


async def test_mixed_chat_batched_is_one_engine_call_and_answers_every_chat_id(live):
    calls = live.loader.batch_calls
    inputs = [
        {"chatId": "a", "userPrompt": "What is the capital of France?", "options": {"maxTokens": 24}},
        {"chatId": "", "userPrompt": "blank id"},
        {"chatId": "b", "userPrompt": ""},
        {"chatId": "a", "userPrompt": "the same id again"},
        {"chatId": "c", "userPrompt": "Name a primary color.", "options": {"maxTokens": 24}},
    ]
    batch = (await post(live, BATCH, {"inputs": inputs})).json()["data"]["chatBatched"]
    r = batch["results"]
    assert (batch["succeeded"], batch["failed"], batch["partialSuccess"]) == (2, 3, True)
    assert r[0]["__typename"] == "ChatSuccess" and "Paris" in r[0]["response"]
    assert r[4]["__typename"] == "ChatSuccess" and r[4]["chatId"] == "c" and r[4]["response"]
    assert [(x["code"], x["field"]) for x in r[1:4]] == [
        ("INVALID_INPUT", "chatId"), ("INVALID_INPUT", "userPrompt"), ("DUPLICATE_CHAT_ID", "chatId")]
    assert live.loader.batch_calls == calls + 1


async def test_concurrent_http_chats_coalesce_into_fewer_engine_calls(live):
    calls = live.loader.batch_calls
    async with httpx.AsyncClient(timeout=120) as client:
        responses = await asyncio.gather(*(
            client.post(f"{live.url}/graphql", json={"query": CHAT, "variables": {
                "input": {"chatId": f"n{i}", "userPrompt": f"Say the number {i}.", "options": {"maxTokens": 12}}}})
            for i in range(8)))
    assert all(r.json()["data"]["chat"]["__typename"] == "ChatSuccess" for r in responses)
    assert live.loader.batch_calls - calls < 8


async def test_chat_stream_over_websocket_deltas_join_to_the_response(live):
    events = []
    async with connect(live.url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": STREAM, "variables": {
            "input": {"chatId": "w", "userPrompt": "Write one sentence about the moon.", "options": {"maxTokens": 40}}}}}))
        while (msg := json.loads(await ws.recv()))["type"] == "next":
            events.append(msg["payload"]["data"]["chatStream"])
        assert msg == {"id": "1", "type": "complete"}
    tokens = [e for e in events if e["__typename"] == "ChatToken"]
    assert len(tokens) > 3 and [t["index"] for t in tokens] == list(range(len(tokens)))
    assert events[-1]["__typename"] == "ChatSuccess"
    assert "".join(t["delta"] for t in tokens) == events[-1]["response"]


async def test_chat_stream_over_sse(live):
    events = []
    payload = {"query": STREAM, "variables": {"input": {"chatId": "s", "userPrompt": "What is the capital of France?"}}}
    async with httpx.AsyncClient(timeout=60) as client:
        async with aconnect_sse(client, "POST", f"{live.url}/graphql", json=payload) as source:
            async for sse in source.aiter_sse():
                if sse.event == "next":
                    events.append(json.loads(sse.data)["data"]["chatStream"])
    assert events[-1]["__typename"] == "ChatSuccess" and "Paris" in events[-1]["response"]
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["response"]


async def test_unsubscribing_mid_stream_frees_the_engine_slot(live, engine):
    async with connect(live.url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        await ws.recv()
        await ws.send(json.dumps({"id": "u", "type": "subscribe", "payload": {"query": STREAM, "variables": {
            "input": {"chatId": "u", "userPrompt": "Write a long essay about oceans.", "options": {"maxTokens": 500}}}}}))
        for _ in range(3):
            assert json.loads(await ws.recv())["type"] == "next"
        assert engine.stats().running == 1
        await ws.send(json.dumps({"id": "u", "type": "complete"}))
        await wait_for(lambda: engine.stats().running == 0, timeout=3)


async def test_closing_the_websocket_mid_stream_frees_the_engine_slot(live, engine):
    ws = await connect(live.url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"type": "connection_init"}))
    await ws.recv()
    await ws.send(json.dumps({"id": "x", "type": "subscribe", "payload": {"query": STREAM, "variables": {
        "input": {"chatId": "x", "userPrompt": "Write a long essay about forests.", "options": {"maxTokens": 500}}}}}))
    assert json.loads(await ws.recv())["type"] == "next"
    await ws.close()
    await wait_for(lambda: engine.stats().running == 0, timeout=3)


async def test_graphiql_is_served_to_browsers(live):
    async with httpx.AsyncClient() as client:
        page = await client.get(f"{live.url}/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


async def test_oversized_body_is_refused_with_413(live):
    response = await post(live, CHAT, {"input": {"chatId": "big", "userPrompt": "x" * 2_000_000}})
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "BODY_TOO_LARGE"


async def test_probes(live):
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{live.url}/healthz")).status_code == 200
        ready = await client.get(f"{live.url}/readyz")
    capacity = EngineConfig().max_running + EngineConfig().max_waiting
    assert ready.status_code == 200 and ready.json() == {"ready": True, "loading": False, "draining": False,
                                                         "running": 0, "waiting": 0, "capacity": capacity}


async def send_long_chat(url: str, chat_id: str) -> asyncio.StreamWriter:
    """POST a long chat mutation on a raw connection, so the test can drop it mid-generation."""
    body = json.dumps({"query": CHAT, "variables": {"input": {
        "chatId": chat_id, "userPrompt": "Write a long essay about mountains.", "options": {"maxTokens": 500}}}}).encode()
    host, port = url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    return writer


async def test_a_client_that_drops_a_chat_mutation_frees_its_slot(live, engine):
    writer = await send_long_chat(live.url, "gone")
    await wait_for(lambda: engine.stats().running == 1 and engine.engine.stats.tokens_generated > 0)
    tokens = engine.engine.stats.tokens_generated
    writer.close()
    await wait_for(lambda: engine.stats().running == 0, timeout=3)
    assert engine.engine.stats.tokens_generated - tokens < 100, "generation stopped soon after the disconnect"


async def test_a_chat_past_its_deadline_gets_timeout_and_frees_its_slot(engine):
    from conftest import start_server

    from graphql_api.app import create_app
    from graphql_api.settings import ApiSettings

    server, task, url = await start_server(create_app(ApiSettings(request_timeout_s=0.5), engine=engine))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{url}/graphql", json={"query": CHAT, "variables": {"input": {
                "chatId": "slow", "userPrompt": "Write a long essay about rivers.", "options": {"maxTokens": 500}}}})
        chat = response.json()["data"]["chat"]
        assert (chat["code"], chat["chatId"]) == ("TIMEOUT", "slow") and "0.5 s" in chat["message"]
        await wait_for(lambda: engine.stats().running == 0, timeout=3)
    finally:
        server.should_exit = True
        await task
