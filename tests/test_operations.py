"""Operability: metrics, operation logs, readiness and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from test_api_http import CHAT, post


async def test_metrics_expose_engine_and_api_series(live):
    await post(live, CHAT, {"input": {"chatId": "m1", "userPrompt": "Say hi.", "options": {"maxTokens": 8}}})
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{live.url}/metrics")).text
    for series in ("smollm_num_requests_running", "smollm_num_requests_waiting", "smollm_batch_size_bucket",
                   "smollm_time_to_first_token_seconds_count", "smollm_e2e_request_latency_seconds_count",
                   "smollm_time_per_output_token_seconds_count", "smollm_request_queue_time_seconds_count",
                   "smollm_prompt_tokens_total", "smollm_generation_tokens_total",
                   'smollm_graphql_chats_total{key="anonymous",operation="chat",outcome="SUCCESS"}'):
        assert series in text, series


async def test_one_log_line_per_operation_with_request_id_chat_ids_and_outcomes(live, caplog):
    caplog.set_level(logging.INFO, logger="graphql_api.operations")
    query = "mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { succeeded } }"
    await post(live, query, {"inputs": [{"chatId": "L1", "userPrompt": "Say hi.", "options": {"maxTokens": 4}},
                                        {"chatId": "L2", "userPrompt": ""}]}, headers={"x-request-id": "log-test"})
    [line] = [r.getMessage() for r in caplog.records if "log-test" in r.getMessage()]
    assert "operation=chatBatched" in line and "L1=SUCCESS" in line and "L2=INVALID_INPUT" in line
    assert "duration_ms=" in line


async def wait_ready(client: httpx.AsyncClient, url: str, seconds: float = 120) -> None:
    """Until ``url/readyz`` answers 200 (a loaded machine starts slowly)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            if (await client.get(f"{url}/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert asyncio.get_running_loop().time() < deadline, "the server did not get ready"
        await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.model  # a real server process, with the model
async def test_sigterm_drains_in_flight_chats_refuses_new_ones_and_exits_0():
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DRAIN_TIMEOUT_S": "60", "LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "graphql_api"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            await wait_ready(client, url)
            # Long enough to be still running when the signal and the checks after it land (native
            # weights decode 60 tokens in under a second here).
            body = {"query": CHAT, "variables": {"input": {"chatId": "inflight",
                                                           "userPrompt": "Write a long story about a dragon and a knight.",
                                                           "options": {"maxTokens": 400}}}}
            in_flight = asyncio.ensure_future(client.post(f"{url}/graphql", json=body))
            # The signal lands once the chat is in the engine: a drain waits for the engine's chats,
            # and on a loaded machine half a second may not see this one admitted yet.
            for _ in range(200):
                if (await client.get(f"{url}/readyz")).json()["running"] >= 1:
                    break
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            ready = await client.get(f"{url}/readyz")
            assert ready.status_code == 503 and ready.json()["draining"] is True
            late = await client.post(f"{url}/graphql", json={**body, "variables": {"input": {"chatId": "late", "userPrompt": "Hi"}}})
            assert late.json()["data"]["chat"]["code"] == "UNAVAILABLE"
            done = (await in_flight).json()["data"]["chat"]
            assert done["__typename"] == "ChatSuccess" and done["chatId"] == "inflight", done
        assert await asyncio.to_thread(proc.wait, 30) == 0
        logs = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
        assert any(entry.get("operation") == "chat" and entry.get("request_id") for entry in logs)
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_while_the_model_loads_readyz_is_503_and_chats_get_unavailable():
    from conftest import start_server
    from fakes import FakeEngine

    from graphql_api.app import create_app
    from graphql_api.settings import ApiSettings

    class SlowStart(FakeEngine):
        async def start(self) -> None:
            await asyncio.sleep(1.5)
            await super().start()

    server, task, url = await start_server(create_app(ApiSettings(), engine=SlowStart()))
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{url}/healthz")).status_code == 200
            loading = await client.get(f"{url}/readyz")
            assert loading.status_code == 503 and loading.json()["loading"] is True
            early = await client.post(f"{url}/graphql", json={"query": CHAT, "variables": {"input": {"chatId": "e", "userPrompt": "hi"}}})
            assert early.json()["data"]["chat"]["code"] == "UNAVAILABLE" and "loading" in early.json()["data"]["chat"]["message"]
            await asyncio.sleep(1.6)
            assert (await client.get(f"{url}/readyz")).status_code == 200
            later = await client.post(f"{url}/graphql", json={"query": CHAT, "variables": {"input": {"chatId": "l", "userPrompt": "hi"}}})
            assert later.json()["data"]["chat"]["__typename"] == "ChatSuccess"
    finally:
        server.should_exit = True
        await task


@pytest.mark.model  # a real server process, which imports torch before it finds no model
def test_a_model_that_cannot_be_loaded_stops_the_server_with_the_reason():
    env = {**os.environ, "PORT": str(free_port()), "MODEL_PATH": "/nonexistent/model.gguf"}
    done = subprocess.run([sys.executable, "-m", "graphql_api"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Could not start" in done.stderr and "/nonexistent/model.gguf" in done.stderr and "does not exist" in done.stderr
