"""API keys and per-key quotas, over real HTTP, SSE and WebSocket with the real model."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import httpx
import pytest
from conftest import engine_like
from httpx_sse import aconnect_sse
from test_api_http import BATCH, CHAT, STREAM, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from graphql_api.app import create_app
from graphql_api.settings import ApiSettings
from http_common import keys as keys_module
from http_common.keys import KeyRing, new_key, parse_line
from inference.engine.async_engine import AsyncEngine
from inference.service.app import ServiceSettings, create_service

VIEWER = "{ viewer { name limits { requestsPerMinute tokensPerMinute concurrentStreams } " \
         "usage { requestsThisMinute tokensThisMinute openStreams } } }"


class Keys:
    """A keys file with a few keys; ``headers(name)`` authenticates as that key."""

    def __init__(self, path, limits: dict[str, str]) -> None:
        self.keys = {}
        lines = []
        for name, spec in limits.items():
            key, line = new_key(name)
            self.keys[name] = key
            lines.append(line + (f":{spec}" if spec else ""))
        path.write_text("# test keys\n" + "\n".join(lines) + "\n")
        self.path = str(path)

    def headers(self, name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture
def keyfile(tmp_path):
    return Keys(tmp_path / "keys", {"alice": "rpm=6", "bob": "", "carol": "tpm=100000", "dave": "streams=1"})


@pytest.fixture
async def keyed(engine, serve, keyfile):
    app = create_app(ApiSettings(api_keys_file=keyfile.path), engine=engine)
    return app, await serve(app)


def chat_body(chat_id: str, max_tokens: int = 2) -> dict:
    return {"query": CHAT, "variables": {"input": {"chatId": chat_id, "userPrompt": "Say yes.",
                                                    "options": {"maxTokens": max_tokens}}}}


async def test_http_and_sse_refuse_missing_malformed_and_wrong_keys_before_any_work(keyed, keyfile):
    app, url = keyed
    loader_calls = app.state.api.loader.batch_calls
    refused = [{}, {"authorization": "Basic " + keyfile.keys["bob"]}, {"authorization": "Bearer"},
               {"authorization": "Bearer sk-wrong"}, {"x-api-key": keyfile.keys["bob"][:-1]}]
    async with httpx.AsyncClient(timeout=60) as client:
        for headers in refused:
            r = await client.post(f"{url}/graphql", json=chat_body("x"), headers=headers)
            assert r.status_code == 401 and r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED", r.text
            sse = await client.post(f"{url}/graphql", headers={**headers, "accept": "text/event-stream"},
                                    json={"query": STREAM, "variables": {"input": {"chatId": "s", "userPrompt": "hi"}}})
            assert sse.status_code == 401
        assert app.state.api.loader.batch_calls == loader_calls
        ok = await client.post(f"{url}/graphql", json=chat_body("ok"), headers=keyfile.headers("bob"))
        assert ok.json()["data"]["chat"]["__typename"] == "ChatSuccess"
        other = await client.post(f"{url}/graphql", json=chat_body("ok2"), headers={"x-api-key": keyfile.keys["bob"]})
        assert other.json()["data"]["chat"]["__typename"] == "ChatSuccess"
        events = []
        async with aconnect_sse(client, "POST", f"{url}/graphql", headers=keyfile.headers("bob"), json={
                "query": STREAM, "variables": {"input": {"chatId": "s", "userPrompt": "Say hi.", "options": {"maxTokens": 4}}}}) as source:
            async for sse_event in source.aiter_sse():
                if sse_event.event == "next":
                    events.append(json.loads(sse_event.data)["data"]["chatStream"]["__typename"])
        assert events[-1] == "ChatSuccess"
        assert (await client.get(f"{url}/healthz")).status_code == 200
        assert (await client.get(f"{url}/readyz")).status_code == 200
        assert (await client.get(f"{url}/metrics")).status_code == 401
        assert (await client.get(f"{url}/metrics", headers=keyfile.headers("bob"))).status_code == 200
        page = await client.get(f"{url}/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()


async def ws_init(url: str, payload: dict | None, headers: dict | None = None):
    ws = await connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"],
                       additional_headers=headers)
    await ws.send(json.dumps({"type": "connection_init", **({"payload": payload} if payload is not None else {})}))
    return ws


async def test_websocket_needs_a_key_in_connection_init_or_the_handshake(keyed, keyfile):
    _, url = keyed
    for payload in (None, {}, {"authorization": "Bearer sk-wrong"}, {"authorization": keyfile.keys["bob"]}):
        ws = await ws_init(url, payload)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 4403, payload
    ws = await connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"])
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ viewer { name } }"}}))
    with pytest.raises(ConnectionClosed) as closed:  # no connection_init at all
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4401
    for ws in (await ws_init(url, keyfile.headers("bob")), await ws_init(url, None, headers=keyfile.headers("bob"))):
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "v", "type": "subscribe", "payload": {"query": "{ viewer { name } }"}}))
        assert json.loads(await ws.recv())["payload"]["data"] == {"viewer": {"name": "bob"}}
        await ws.close()


def test_keys_are_compared_in_constant_time(monkeypatch):
    made = [new_key(n) for n in ("a", "b", "c")]
    ring = KeyRing([parse_line(line, "test") for _, line in made])
    calls = []
    real = keys_module.hmac.compare_digest
    monkeypatch.setattr(keys_module.hmac, "compare_digest", lambda x, y: calls.append(1) or real(x, y))
    assert ring.authenticate(made[0][0]).name == "a" and len(calls) == 3  # every digest, after a match too
    assert ring.authenticate("sk-wrong") is None and len(calls) == 6


async def test_a_key_over_its_request_quota_is_rate_limited_while_another_is_served(keyed, keyfile):
    _, url = keyed
    inputs = [{"chatId": str(i), "userPrompt": "Say yes.", "options": {"maxTokens": 1}} for i in range(10)]
    query = BATCH.replace("message field", "message field retryAfterMs")
    async with httpx.AsyncClient(timeout=120) as client:
        batch = (await client.post(f"{url}/graphql", json={"query": query, "variables": {"inputs": inputs}},
                                   headers=keyfile.headers("alice"))).json()["data"]["chatBatched"]
        again = (await client.post(f"{url}/graphql", json=chat_body("late"), headers=keyfile.headers("alice"))).json()
        bob = (await client.post(f"{url}/graphql", json=chat_body("bob"), headers=keyfile.headers("bob"))).json()
        viewer = (await client.post(f"{url}/graphql", json={"query": VIEWER}, headers=keyfile.headers("alice"))).json()
    results = batch["results"]
    assert [r["__typename"] for r in results] == ["ChatSuccess"] * 6 + ["ChatError"] * 4
    assert all(r["code"] == "RATE_LIMITED" and 0 < r["retryAfterMs"] <= 60_000 for r in results[6:])
    assert again["data"]["chat"]["code"] == "RATE_LIMITED"
    assert bob["data"]["chat"]["__typename"] == "ChatSuccess"
    assert viewer["data"]["viewer"] == {"name": "alice", "limits": {"requestsPerMinute": 6, "tokensPerMinute": 0,
                                                                     "concurrentStreams": 0},
                                        "usage": {"requestsThisMinute": 6, "tokensThisMinute": 0, "openStreams": 0}}


async def test_the_token_quota_settles_to_what_the_chat_really_used(keyed, keyfile):
    _, url = keyed
    query = CHAT.replace("usage { completionTokens }", "usage { totalTokens }")
    async with httpx.AsyncClient(timeout=120) as client:
        body = chat_body("t", max_tokens=8) | {"query": query}
        answer = (await client.post(f"{url}/graphql", json=body, headers=keyfile.headers("carol"))).json()["data"]["chat"]
        viewer = (await client.post(f"{url}/graphql", json={"query": VIEWER}, headers=keyfile.headers("carol"))).json()
    assert answer["__typename"] == "ChatSuccess"
    assert viewer["data"]["viewer"]["usage"]["tokensThisMinute"] == answer["usage"]["totalTokens"]


async def test_the_stream_cap_refuses_a_second_stream_and_closes_nothing_running(keyed, keyfile):
    _, url = keyed
    first = await ws_init(url, keyfile.headers("dave"))
    await first.recv()
    await first.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": STREAM, "variables": {
        "input": {"chatId": "long", "userPrompt": "Write a story about a fox.", "options": {"maxTokens": 40}}}}}))
    assert json.loads(await first.recv())["type"] == "next"
    second = await ws_init(url, keyfile.headers("dave"))
    await second.recv()
    await second.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": STREAM, "variables": {
        "input": {"chatId": "more", "userPrompt": "hi"}}}}))
    refused = json.loads(await asyncio.wait_for(second.recv(), 10))["payload"]["data"]["chatStream"]
    assert refused["__typename"] == "ChatError" and refused["code"] == "RATE_LIMITED" and "1 streams" in refused["message"]
    while (msg := json.loads(await asyncio.wait_for(first.recv(), 60)))["type"] == "next":
        last = msg["payload"]["data"]["chatStream"]
    assert last["__typename"] == "ChatSuccess"
    await second.send(json.dumps({"id": "3", "type": "subscribe", "payload": {"query": STREAM, "variables": {
        "input": {"chatId": "after", "userPrompt": "Say hi.", "options": {"maxTokens": 2}}}}}))
    while (msg := json.loads(await asyncio.wait_for(second.recv(), 30)))["type"] == "next":
        last = msg["payload"]["data"]["chatStream"]
    assert last["__typename"] == "ChatSuccess"
    await first.close()
    await second.close()


async def test_per_key_metrics_and_log_lines_name_the_key_never_the_key_itself(keyed, keyfile, caplog):
    _, url = keyed
    caplog.set_level(logging.INFO, logger="graphql_api.operations")
    async with httpx.AsyncClient(timeout=60) as client:
        await client.post(f"{url}/graphql", json=chat_body("m"), headers=keyfile.headers("bob"))
        metrics = (await client.get(f"{url}/metrics", headers=keyfile.headers("bob"))).text
    assert 'smollm_graphql_chats_total{key="bob",operation="chat",outcome="SUCCESS"}' in metrics
    assert 'smollm_graphql_tokens_total{key="bob",kind="completion"}' in metrics
    assert keyfile.keys["bob"] not in metrics
    await wait_for(lambda: any("key=bob" in r.getMessage() for r in caplog.records))
    assert not any(keyfile.keys["bob"] in r.getMessage() for r in caplog.records)


def test_the_keys_command_prints_a_key_and_the_line_that_lets_it_in():
    done = subprocess.run([sys.executable, "-m", "graphql_api", "keys", "new", "ci"], capture_output=True, text=True,
                          timeout=60, check=True)
    key, line = done.stdout.split()
    assert key.startswith("sk-") and line.startswith("ci:") and key not in line
    assert KeyRing([parse_line(line, "cmd")]).authenticate(key).name == "ci"


async def test_remote_mode_sends_the_upstream_key_and_a_wrong_one_is_unavailable(llm, serve, tmp_path, caplog):
    upstream = Keys(tmp_path / "upstream-keys", {"api-tier": ""})
    service = create_service(AsyncEngine(engine_like(llm, max_running=4, max_waiting=8)),
                             ServiceSettings(api_keys_file=upstream.path))
    service_url = await serve(service)
    async with httpx.AsyncClient(timeout=60) as client:
        assert (await client.get(f"{service_url}/v1/models")).status_code == 401
    caplog.set_level(logging.ERROR, logger="inference.remote")
    for key, expected in ((upstream.keys["api-tier"], "ChatSuccess"), ("sk-wrong", "UNAVAILABLE")):
        app = create_app(ApiSettings(inference_url=service_url, inference_api_key=key))
        url = await serve(app)
        await wait_for(lambda app=app: app.state.api.engine.target is not None, timeout=10)
        async with httpx.AsyncClient(timeout=60) as client:
            chat = (await client.post(f"{url}/graphql", json=chat_body("r"))).json()["data"]["chat"]
        assert chat.get("code", chat["__typename"]) == expected, chat
    assert any("refused this server's key" in r.getMessage() for r in caplog.records)
