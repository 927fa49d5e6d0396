"""`python -m benchmarks.auth`: what API keys and per-key quotas add to one chat.

The claim: auth and quota checks add at most 1 ms to a chat, keys on against keys off, in the same
run. Two apps run in this process on free loopback ports, over the same engine object: one
without keys, one with a keys file whose one key has quotas high enough never to refuse (so every
chat is authenticated *and* charged against rpm and tpm in the default in-memory store). Rounds
alternate between them (keys off, keys on, ...), each N sequential one-chat mutations over one
httpx.AsyncClient; the same ``Authorization`` header goes to both, so the bytes on the wire are
the same. Prints the median per-chat latency of each, the difference in ms, and the ratio.

The engine is a tiny stand-in defined here that answers at once: no model, no tokenizer, no
scheduler. It isolates the API's own cost (HTTP, GraphQL, DataLoader and, keys on, auth and
quotas), so that the difference is not lost in the model's milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

from benchmarks.serving import serve, wait_ready
from graphql_api.app import create_app
from graphql_api.settings import ApiSettings
from inference.boundary import (
    ChatRequest,
    Completion,
    EngineError,
    EngineInfo,
    EngineStats,
    FinishReason,
    Timings,
    TokenDelta,
    Usage,
)

CHAT = """mutation($input: ChatInput!) { chat(input: $input) { __typename
  ... on ChatSuccess { response } ... on ChatError { code message } } }"""
BUDGET_MS = 1.0


class InstantTicket:
    def __init__(self, completion: Completion) -> None:
        self.completion = completion

    async def result(self, timeout: float | None = None) -> Completion | EngineError:
        return self.completion

    def close(self) -> None:
        pass


class InstantEngine:
    """Answers every chat with one token ("ok") at once: only the API's cost is left to measure."""

    metrics = None  # no Prometheus series of its own

    def __init__(self) -> None:
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def stats(self) -> EngineStats:
        return EngineStats()

    def info(self) -> EngineInfo:
        return EngineInfo(name="instant", source="", parameters=0, context_length=2048, device="cpu", dtype="none",
                          max_new_tokens_cap=1024, default_max_new_tokens=256, max_running=64, max_waiting=256)

    @staticmethod
    def _answer(request: ChatRequest) -> Completion:
        return Completion(request_id=request.request_id, text="ok", finish_reason=FinishReason.STOP,
                          usage=Usage(prompt_tokens=1, completion_tokens=1), timings=Timings(queued_ms=0.0, first_token_ms=0.0, total_ms=0.0))

    async def submit(self, requests: Sequence[ChatRequest]) -> list[InstantTicket | EngineError]:
        return [InstantTicket(self._answer(r)) for r in requests]

    async def tokenize(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]  # one "token" per word

    async def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]:
        yield TokenDelta(index=0, text="ok")
        yield self._answer(request)


async def chat_once(client: httpx.AsyncClient, url: str, i: int, headers: dict[str, str]) -> dict:
    response = await client.post(url, headers=headers, json={"query": CHAT, "variables": {"input": {
        "chatId": f"c{i}", "userPrompt": "Say hello.", "options": {"maxTokens": 1}}}})
    try:
        body = response.json()
    except ValueError:
        return {"status": response.status_code, "body": response.text[:200]}
    return (body.get("data") or {}).get("chat") or {"status": response.status_code, "errors": body.get("errors")}


async def round_of(client: httpx.AsyncClient, url: str, n: int, headers: dict[str, str]) -> list[float]:
    """``n`` sequential chats; milliseconds each."""
    latencies = []
    for i in range(n):
        t0 = time.perf_counter()
        chat = await chat_once(client, url, i, headers)
        latencies.append((time.perf_counter() - t0) * 1000)
        if chat.get("__typename") != "ChatSuccess":
            raise RuntimeError(f"a benchmark chat was not served: {chat}")
    return latencies


async def main_async(args: argparse.Namespace) -> None:
    for name in ("API_KEYS_FILE", "RATE_LIMIT_STORAGE"):  # the keys-off app must really have keys off
        os.environ.pop(name, None)
    key = "sk-" + secrets.token_urlsafe(32)
    huge = 10**9
    engine = InstantEngine()
    await engine.start()
    with tempfile.TemporaryDirectory() as tmp:
        keys_file = Path(tmp) / "api-keys"
        keys_file.write_text(f"bench:{hashlib.sha256(key.encode()).hexdigest()}:rpm={huge},tpm={huge},streams=1000\n")
        servers = [await serve(create_app(ApiSettings(), engine=engine), max_message_bytes=1_000_000),
                   await serve(create_app(ApiSettings(api_keys_file=str(keys_file)), engine=engine), max_message_bytes=1_000_000)]
        urls = {"keys off": servers[0][2] + "/graphql", "keys on": servers[1][2] + "/graphql"}
        headers = {"Authorization": f"Bearer {key}"}
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                for url in urls.values():
                    await wait_ready(client, url.removesuffix("/graphql"))
                refused = await chat_once(client, urls["keys on"], 0, {})
                if refused.get("__typename") == "ChatSuccess":
                    raise RuntimeError("keys on, yet a chat without a key was served: the benchmark would measure nothing")
                for url in urls.values():  # warm-up: connections, caches, first-call imports
                    await round_of(client, url, args.chats // 4 or 1, headers)
                latencies: dict[str, list[float]] = {mode: [] for mode in urls}
                medians: dict[str, list[float]] = {mode: [] for mode in urls}
                for _ in range(args.rounds):
                    for mode, url in urls.items():
                        gc.collect()  # a collection falls between rounds, not inside one mode's round
                        ms = await round_of(client, url, args.chats, headers)
                        latencies[mode] += ms
                        medians[mode].append(statistics.median(ms))
        finally:
            for server, task, _ in servers:
                server.should_exit = True
                await task
            await engine.stop()

    off, on = statistics.median(latencies["keys off"]), statistics.median(latencies["keys on"])
    print(f"{args.rounds} alternating rounds of {args.chats} sequential one-chat mutations each, instant engine")
    print(f"{'':10} {'median ms':>10} {'p90 ms':>8}  per-round medians (ms)")
    for mode in urls:
        p90 = statistics.quantiles(latencies[mode], n=10)[-1]
        rounds = " ".join(f"{m:.3f}" for m in medians[mode])
        print(f"{mode:10} {statistics.median(latencies[mode]):10.3f} {p90:8.3f}  {rounds}")
    diff = on - off
    paired = statistics.median(b - a for a, b in zip(medians["keys off"], medians["keys on"], strict=True))
    print(f"difference (keys on - keys off): {diff:+.3f} ms per chat; ratio {on / off:.3f}x; "
          f"budget {BUDGET_MS:.1f} ms: {'within' if diff <= BUDGET_MS else 'OVER'}")
    print(f"median of the per-round differences (each keys-on round against the keys-off round before it): {paired:+.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="rounds per mode (at least 5)")
    parser.add_argument("--chats", type=int, default=200, help="sequential chats per round (at least 200)")
    args = parser.parse_args()
    if args.rounds < 5 or args.chats < 200:
        parser.error("at least 5 rounds of 200 chats")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
