"""Two tiers: the inference service in its own process, the GraphQL API over it (real model)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from conftest import LiveServer, chat, start_server
from test_api_http import BATCH, CHAT, STREAM, send_long_chat
from test_operations import free_port
from websockets.asyncio.client import connect

from graphql_api.app import create_app
from graphql_api.settings import ApiSettings
from inference.remote import RemoteEngine


class Service:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, "the inference service exited"
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the inference service did not get ready"
            time.sleep(0.1)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def service():
    s = Service()
    yield s
    s.kill()


@pytest.fixture(scope="module")
async def remote(service):
    app = create_app(ApiSettings(inference_url=service.url))
    server, task, url = await start_server(app)
    yield LiveServer(url, app)
    server.should_exit = True
    await task


async def gql(url: str, query: str, variables: dict) -> dict:
    async with httpx.AsyncClient(timeout=120) as client:
        return (await client.post(f"{url}/graphql", json={"query": query, "variables": variables})).json()


async def test_chat_through_the_remote_tier(remote):
    data = await gql(remote.url, CHAT, {"input": {"chatId": "r1", "userPrompt": "What is the capital of France?"}})
    assert data["data"]["chat"]["__typename"] == "ChatSuccess" and "Paris" in data["data"]["chat"]["response"]


async def test_mixed_batch_is_one_upstream_call_with_errors_as_data(remote):
    engine = remote.app.state.api.engine.target
    calls = engine.upstream_calls
    inputs = [{"chatId": "a", "userPrompt": "What is the capital of France?", "options": {"maxTokens": 16}},
              {"chatId": "", "userPrompt": "x"}, {"chatId": "b", "userPrompt": ""}, {"chatId": "a", "userPrompt": "dup"},
              {"chatId": "t", "userPrompt": "x", "options": {"topP": 0}},
              {"chatId": "c", "userPrompt": "Name a primary color.", "options": {"maxTokens": 16}}]
    batch = (await gql(remote.url, BATCH, {"inputs": inputs}))["data"]["chatBatched"]
    r = batch["results"]
    assert (batch["succeeded"], batch["failed"]) == (2, 4)
    assert "Paris" in r[0]["response"] and r[5]["__typename"] == "ChatSuccess"
    assert [x["code"] for x in r[1:5]] == ["INVALID_INPUT", "INVALID_INPUT", "DUPLICATE_CHAT_ID", "INVALID_INPUT"]
    assert r[4]["field"] == "options.topP"
    assert engine.upstream_calls == calls + 1


async def test_chat_stream_through_the_remote_tier(remote):
    events = []
    async with connect(remote.url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        await ws.recv()
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": STREAM, "variables": {
            "input": {"chatId": "rs", "userPrompt": "What is the capital of France?"}}}}))
        while (msg := json.loads(await ws.recv()))["type"] == "next":
            events.append(msg["payload"]["data"]["chatStream"])
    assert events[-1]["__typename"] == "ChatSuccess" and "Paris" in events[-1]["response"]
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["response"]


async def test_structured_output_through_the_remote_tier_and_the_openai_endpoint(remote, service):
    query = "mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { results { __typename " \
            "... on ChatSuccess { response json } ... on ChatError { code field partialText } } } }"
    person = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    inputs = [{"chatId": "j", "userPrompt": "Extract: Bob, 41, is a doctor.", "options": {"maxTokens": 40, "responseFormat": {"jsonSchema": person}}},
              {"chatId": "c", "userPrompt": "Is water wet?", "options": {"maxTokens": 8, "responseFormat": {"choice": ["yes", "no"]}}},
              {"chatId": "cut", "userPrompt": "Extract: Bob, 41.", "options": {"maxTokens": 3, "responseFormat": {"jsonSchema": person}}}]
    j, c, cut = (await gql(remote.url, query, {"inputs": inputs}))["data"]["chatBatched"]["results"]
    assert j["__typename"] == "ChatSuccess" and set(j["json"]) == {"name", "age"} and json.loads(j["response"]) == j["json"]
    assert c["response"] in ("yes", "no")
    assert (cut["code"], cut["field"], cut["partialText"][:1]) == ("INCOMPLETE_OUTPUT", "options.responseFormat", '{')
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.post(f"{service.url}/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Extract: Ann, 30."}], "temperature": 0, "max_tokens": 40,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": person}}})
        bad = await client.post(f"{service.url}/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", "json_schema": {
                "name": "p", "schema": {"type": "object", "if": {}}}}})
    assert set(json.loads(answer.json()["choices"][0]["message"]["content"])) == {"name", "age"}
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"
    assert "Unimplemented keys" in bad.json()["error"]["message"]


async def test_openai_endpoint_errors_and_stream_shape(service):
    async with httpx.AsyncClient(timeout=60) as client:
        bad = await client.post(f"{service.url}/v1/chat/completions",
                                json={"messages": [{"role": "user", "content": "hi"}], "temperature": 9})
        assert bad.status_code == 400 and "temperature" in bad.json()["error"]["message"]
        assert bad.json()["error"]["param"] == "temperature"
        lines = []
        async with client.stream("POST", f"{service.url}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    lines.append(line[6:])
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "Paris" in text


@pytest.mark.model  # its own inference service process
async def test_fallback_to_chat_completions_when_the_server_has_no_generate_batch():
    plain = Service("--no-generate-batch")
    engine = RemoteEngine([plain.url])
    await engine.start()
    try:
        results = await engine.generate_batch([chat("What is the capital of France?", temperature=0.0, max_new_tokens=16),
                                               chat("Hi", temperature=5.0)])
        assert "Paris" in results[0].text
        assert results[1].code == "INVALID_INPUT" and "temperature" in results[1].message
        assert engine.upstreams[0].batch_path is False
        calls = engine.upstream_calls
        await engine.generate_batch([chat("Say one word.", max_new_tokens=4) for _ in range(3)])
        assert engine.upstream_calls == calls + 3, "the path is remembered: no second /generate_batch probe"
    finally:
        await engine.stop()
        plain.kill()


async def test_unreachable_upstream_gives_unavailable_quickly_and_is_skipped():
    dead = f"http://127.0.0.1:{free_port()}"
    app = create_app(ApiSettings(inference_url=dead))
    server, task, url = await start_server(app)
    try:
        started = time.monotonic()
        data = await gql(url, CHAT, {"input": {"chatId": "u", "userPrompt": "Hi"}})
        assert data["data"]["chat"]["code"] == "UNAVAILABLE"
        assert time.monotonic() - started < 5
    finally:
        server.should_exit = True
        await task


async def test_two_upstreams_one_dead_all_chats_still_answered(service):
    engine = RemoteEngine([f"http://127.0.0.1:{free_port()}", service.url])
    await engine.start()
    try:
        results = await asyncio.gather(*(engine.generate_batch([chat(f"Say {i}.", max_new_tokens=4)]) for i in range(4)))
        assert all(r[0].text for r in results)
        assert engine.upstreams[0].down_until > time.monotonic()
    finally:
        await engine.stop()


@pytest.mark.model  # its own inference service process
async def test_upstream_killed_mid_stream_ends_every_open_operation_with_unavailable():
    doomed = Service()
    app = create_app(ApiSettings(inference_url=doomed.url))
    server, task, url = await start_server(app)
    try:
        ws = await connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"])
        await ws.send(json.dumps({"type": "connection_init"}))
        await ws.recv()
        await ws.send(json.dumps({"id": "k", "type": "subscribe", "payload": {"query": STREAM, "variables": {
            "input": {"chatId": "k", "userPrompt": "Write a long essay about volcanoes.", "options": {"maxTokens": 500}}}}}))
        assert json.loads(await ws.recv())["type"] == "next"
        mutation = asyncio.ensure_future(gql(url, CHAT, {"input": {
            "chatId": "m", "userPrompt": "Write a long essay about glaciers.", "options": {"maxTokens": 500}}}))
        await asyncio.sleep(0.5)
        killed = time.monotonic()
        doomed.kill()
        while (msg := json.loads(await asyncio.wait_for(ws.recv(), 5)))["type"] == "next":
            event = msg["payload"]["data"]["chatStream"]
            if event["__typename"] != "ChatToken":
                break
        assert event == {"__typename": "ChatError", "code": "UNAVAILABLE", "message": event["message"]}
        assert (await asyncio.wait_for(mutation, 5))["data"]["chat"]["code"] == "UNAVAILABLE"
        assert time.monotonic() - killed < 5
        await ws.close()
    finally:
        server.should_exit = True
        await task
        if doomed.proc.poll() is None:
            doomed.kill()


@pytest.mark.skipif(not os.environ.get("OPENAI_COMPATIBLE_URL"),
                    reason="set OPENAI_COMPATIBLE_URL to a foreign OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama) to run")
async def test_against_a_foreign_openai_compatible_server():
    engine = RemoteEngine([os.environ["OPENAI_COMPATIBLE_URL"]])
    await engine.start()
    try:
        [result] = await engine.generate_batch([chat("What is the capital of France?", max_new_tokens=32)])
        assert "Paris" in result.text
        deltas = [e async for e in engine.stream(chat("What is the capital of France?", max_new_tokens=32))]
        assert "".join(d.text for d in deltas[:-1]) == deltas[-1].text
    finally:
        await engine.stop()


async def test_a_dropped_chat_mutation_is_aborted_upstream(remote, service):
    writer = await send_long_chat(remote.url, "drop")

    async def upstream_running() -> float:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{service.url}/metrics")).text
        return float(next(line.split()[1] for line in text.splitlines() if line.startswith("smollm_num_requests_running ")))

    deadline = time.monotonic() + 10
    while await upstream_running() != 1:
        assert time.monotonic() < deadline, "the chat never started upstream"
        await asyncio.sleep(0.05)
    writer.close()
    deadline = time.monotonic() + 5
    while await upstream_running() != 0:
        assert time.monotonic() < deadline, "the upstream generation was not aborted"
        await asyncio.sleep(0.05)


async def test_more_chats_in_one_tick_than_the_upstream_batch_limit_go_as_several_calls(llm):
    """Five concurrent chatBatched of 8 against a service whose /generate_batch takes 16: the
    loader follows the limit the service reports, so every chat is answered (before, all 40 got
    INVALID_INPUT from the service's limit; at the default limit of 256 that took 5 x 64)."""
    from conftest import engine_like

    from inference.engine.async_engine import AsyncEngine
    from inference.service.app import ServiceSettings, create_service

    service = create_service(AsyncEngine(engine_like(llm, max_running=16, max_waiting=64)),
                             ServiceSettings(max_batch_items=16))
    s_server, s_task, s_url = await start_server(service)
    app = create_app(ApiSettings(inference_url=s_url))
    a_server, a_task, url = await start_server(app)
    try:
        for _ in range(100):
            if app.state.api.engine.target is not None:
                break
            await asyncio.sleep(0.05)
        engine = app.state.api.engine.target
        assert engine.info().max_batch_items == 16
        calls = engine.upstream_calls
        batches = [[{"chatId": f"{b}-{i}", "userPrompt": f"Say {i}.", "options": {"maxTokens": 1}} for i in range(8)]
                   for b in range(5)]
        answers = await asyncio.gather(*(gql(url, BATCH, {"inputs": inputs}) for inputs in batches))
        assert all(a["data"]["chatBatched"]["succeeded"] == 8 for a in answers), answers
        assert engine.upstream_calls - calls >= 3  # 40 chats, at most 16 per call
    finally:
        for server, task in ((a_server, a_task), (s_server, s_task)):
            server.should_exit = True
            await task
