"""Per-key quotas shared through a real redis-server by two API processes (real model, loaded once
in one inference service that both API processes front)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from redis_server import redis_url  # noqa: F401
from test_operations import free_port
from test_remote import Service

CHAT = """mutation($input: ChatInput!) { chat(input: $input) { __typename
  ... on ChatSuccess { chatId }
  ... on ChatError { chatId code message retryAfterMs } } }"""
READY_TIMEOUT_S = 120.0  # a loaded 2-core machine starts slowly
CHAT_TIMEOUT_S = 60.0


def new_key(name: str) -> tuple[str, str]:
    """``python -m graphql_api keys new NAME``: the key (first line) and its keys-file line (second)."""
    out = subprocess.run([sys.executable, "-m", "graphql_api", "keys", "new", name],
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert len(out) >= 2 and out[1].startswith(f"{name}:"), out
    return out[0].strip(), out[1].strip()


class ApiProcess:
    """``python -m graphql_api`` on a free port; its output goes to a file, shown if it fails."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "graphql_api", "--port", str(self.port)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"the API process exited ({self.proc.returncode}):\n{self.log()}"
            try:
                if (await client.get(f"{self.url}/readyz", timeout=5)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"the API process did not get ready:\n{self.log()}"
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def one_token_chat(client: httpx.AsyncClient, api: ApiProcess, key: str, chat_id: str) -> dict:
    response = await client.post(f"{api.url}/graphql", headers={"Authorization": f"Bearer {key}"}, timeout=CHAT_TIMEOUT_S,
                                 json={"query": CHAT, "variables": {"input": {
                                     "chatId": chat_id, "userPrompt": "Say hello.", "options": {"maxTokens": 1}}}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["chat"]


@pytest.mark.model  # one inference service process with the model, fronted by two API processes
async def test_two_api_processes_share_one_quota_through_redis(redis_url):  # noqa: F811
    alice_key, alice_line = new_key("alice")
    bob_key, bob_line = new_key("bob")
    service = Service.__new__(Service)  # built in two steps: a service that never gets ready is still killed
    apis: list[ApiProcess] = []
    with tempfile.TemporaryDirectory() as tmp:
        keys_file = Path(tmp) / "api-keys"
        keys_file.write_text(f"# alice: 6 chats a minute; bob: unlimited\n{alice_line}:rpm=6\n{bob_line}\n")
        try:
            await asyncio.to_thread(service.__init__)  # loads the model once; waits up to 120 s for /readyz
            env = {**os.environ, "INFERENCE_URL": service.url, "API_KEYS_FILE": str(keys_file),
                   "RATE_LIMIT_STORAGE": redis_url, "LOG_FORMAT": "json"}
            env.pop("PORT", None)
            apis = [ApiProcess(env, Path(tmp), f"api{i}") for i in (1, 2)]
            async with httpx.AsyncClient() as client:
                for api in apis:
                    await api.wait_ready(client)

                # 4 chats to each process, alternating: every process sees the other's chats.
                results = [await one_token_chat(client, apis[i % 2], alice_key, f"alice-{i}") for i in range(8)]
                served = [r for r in results if r["__typename"] == "ChatSuccess"]
                refused = [r for r in results if r["__typename"] == "ChatError"]
                assert len(served) == 6 and len(refused) == 2, results
                assert [r["chatId"] for r in refused] == ["alice-6", "alice-7"], results
                for r in refused:
                    assert r["code"] == "RATE_LIMITED", r
                    assert isinstance(r["retryAfterMs"], int) and 0 < r["retryAfterMs"] <= 60_000, r
                # One refusal came from each process: the count lives in Redis, not in either process.
                assert {apis[i % 2].url for i, r in enumerate(results) if r["__typename"] == "ChatError"} == {a.url for a in apis}

                for i, api in enumerate(apis):
                    bob = await one_token_chat(client, api, bob_key, f"bob-{i}")
                    assert bob["__typename"] == "ChatSuccess", bob
        finally:
            for api in apis:
                api.stop()
            if hasattr(service, "proc"):
                service.kill()


@pytest.mark.parametrize("shared", ["memory", "redis"])
async def test_concurrent_chats_never_overshoot_a_quota(shared, request):
    """Admission charges first and gives back a refused chat's charge, so racing chats (two
    replicas' Quotas on one Redis, or one replica's) cannot all pass a check before any is charged."""
    from graphql_api.quotas import Quotas
    from http_common.keys import ApiKey, KeyLimits

    uri = request.getfixturevalue("redis_url") if shared == "redis" else "memory://"
    replicas = [Quotas(uri), Quotas(uri)] if shared == "redis" else [Quotas(uri)] * 2
    key = ApiKey(f"race-{shared}", b"", KeyLimits(requests_per_minute=6, tokens_per_minute=1000))
    answers = await asyncio.gather(*(replicas[i % 2].admit(key, 100) for i in range(8)))
    assert sum(a is None for a in answers) == 6 and all(a is None or a > 0 for a in answers[6:] if a)
    usage = await replicas[0].usage(key)
    assert (usage.requests_this_minute, usage.tokens_this_minute) == (6, 600)  # refused chats cost nothing
