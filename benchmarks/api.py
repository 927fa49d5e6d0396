"""`python -m benchmarks.api` (`make bench-api`): the API under load, against the engine alone.

Starts the GraphQL server (real model) as its own process and drives it from this one, with an
engine loaded in this process for the same loads without HTTP or GraphQL, run back to back:
- `chat` over HTTP with 1, 8, 32 and 64 concurrent clients;
- `chatStream` over graphql-transport-ws at the same concurrencies (time to first token from the
  first ChatToken);
- `chatBatched` with 64 items, against the same 64 prompts sent as `chat` one after another.
and naive sequential `model.generate`. Prints the table and ratios; writes bench-results/api.json
and api.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from benchmarks.engine import PROMPTS, Row, chart, run_engine, run_generate
from inference.engine.async_engine import AsyncEngine
from inference.engine.config import EngineConfig
from inference.engine.llm_engine import LLMEngine

CHAT = """mutation($input: ChatInput!) { chat(input: $input) { __typename
  ... on ChatSuccess { usage { completionTokens } timings { timeToFirstTokenMs totalMs } }
  ... on ChatError { code message } } }"""
BATCH = """mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { succeeded results { __typename
  ... on ChatSuccess { usage { completionTokens } } } } }"""
STREAM = """subscription($input: ChatInput!) { chatStream(input: $input) { __typename
  ... on ChatSuccess { usage { completionTokens } } ... on ChatError { code } } }"""


def chat_input(i: int, prompt: str, max_tokens: int) -> dict:
    return {"chatId": str(i), "userPrompt": prompt, "options": {"maxTokens": max_tokens}}


async def api_chat(url: str, prompts: list[str], concurrency: int, max_tokens: int, mode: str = "API chat") -> Row:
    queue = list(enumerate(prompts))
    row = Row(mode, concurrency, len(prompts), 0, 0.0)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        async def worker() -> None:
            while queue:
                i, prompt = queue.pop(0)
                t0 = time.perf_counter()
                r = await client.post(url, json={"query": CHAT, "variables": {"input": chat_input(i, prompt, max_tokens)}})
                chat = r.json()["data"]["chat"]
                assert chat["__typename"] == "ChatSuccess", chat
                row.latencies.append((time.perf_counter() - t0) * 1000)
                row.tokens += chat["usage"]["completionTokens"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    row.seconds = time.perf_counter() - started
    return row


async def api_stream(url: str, prompts: list[str], concurrency: int, max_tokens: int) -> Row:
    queue = list(enumerate(prompts))
    row = Row("API chatStream", concurrency, len(prompts), 0, 0.0)

    async def worker() -> None:
        async with connect(url.replace("http", "ws"), subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            await ws.recv()
            while queue:
                i, prompt = queue.pop(0)
                t0 = time.perf_counter()
                first = None
                await ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": {
                    "query": STREAM, "variables": {"input": chat_input(i, prompt, max_tokens)}}}))
                while (msg := json.loads(await ws.recv()))["type"] == "next":
                    event = msg["payload"]["data"]["chatStream"]
                    first = first or time.perf_counter()
                    if event["__typename"] == "ChatSuccess":
                        row.tokens += event["usage"]["completionTokens"]
                row.latencies.append((time.perf_counter() - t0) * 1000)
                row.ttfts.append(((first or t0) - t0) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    row.seconds = time.perf_counter() - started
    return row


async def api_batched(url: str, prompts: list[str], max_tokens: int) -> Row:
    row = Row("API chatBatched", len(prompts), len(prompts), 0, 0.0)
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        r = await client.post(url, json={"query": BATCH, "variables": {
            "inputs": [chat_input(i, p, max_tokens) for i, p in enumerate(prompts)]}})
        row.seconds = time.perf_counter() - started
    batch = r.json()["data"]["chatBatched"]
    assert batch["succeeded"] == len(prompts), batch
    row.tokens = sum(x["usage"]["completionTokens"] for x in batch["results"])
    row.latencies = [row.seconds * 1000]
    return row


async def paired_small_requests(url: str, engine: AsyncEngine, n: int) -> tuple[list[float], list[float]]:
    """Latency of one-token chats, alternating API and engine request by request, so that both see
    the same machine state."""
    from benchmarks.engine import request

    api, direct = [], []
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(n):
            t0 = time.perf_counter()
            await client.post(url, json={"query": CHAT, "variables": {"input": chat_input(i, PROMPTS[i % 8], 1)}})
            api.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            await engine.generate(request(PROMPTS[i % 8], 1))
            direct.append((time.perf_counter() - t0) * 1000)
    return api, direct


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "graphql_api", "--port", str(port)], env={**os.environ, "LOG_FORMAT": "json"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not get ready")


async def main_async(args: argparse.Namespace) -> None:
    """The server (its own process) and an engine in this process are both loaded; each load runs
    on the API and then on the engine back to back, while the other side idles."""
    prompts, few, n = PROMPTS[:64], PROMPTS[:8], args.max_tokens
    rows: list[Row] = []
    proc = start_server(args.port)
    url = f"http://127.0.0.1:{args.port}/graphql"
    llm = LLMEngine.from_config(EngineConfig())
    engine = AsyncEngine(llm)
    await engine.start()
    try:
        await api_chat(url, few, 4, 8)  # warm-up, both sides
        await run_engine(engine, few, 4, 8)
        api_small, engine_small = await paired_small_requests(url, engine, args.small)
        for c in (1, 8, 32, 64):
            load = few if c == 1 else prompts
            for run in (api_chat(url, load, c, n), run_engine(engine, load, c, n), api_stream(url, load, c, n)):
                rows.append(await run)
                print(rows[-1].summary(), flush=True)
        rows.append(await api_batched(url, prompts, n))
        rows.append(await api_chat(url, prompts, 1, n, mode="API chat one by one"))
        print(rows[-2].summary(), rows[-1].summary(), sep="\n", flush=True)
    finally:
        proc.terminate()
        proc.wait()
        await engine.stop()
    rows.append(run_generate(llm, few, 1, n))
    report(rows, api_small, engine_small, Path(args.out))


def report(rows: list[Row], api_small: list[float], engine_small: list[float], out: Path) -> None:
    by = {(r.mode, r.concurrency): r for r in rows}
    naive = by[("naive generate", 1)].tok_s
    ratios = {
        **{f"API chat@{c} / engine@{c}": round(by[("API chat", c)].tok_s / by[("engine", c)].tok_s, 3) for c in (1, 8, 32, 64)},
        **{f"API chatStream@{c} / engine@{c}": round(by[("API chatStream", c)].tok_s / by[("engine", c)].tok_s, 3) for c in (1, 8, 32, 64)},
        "API chatBatched(64) / the same 64 as chat one by one": round(
            by[("API chat one by one", 1)].seconds / by[("API chatBatched", 64)].seconds, 2),
        "API chat@64 / naive generate": round(by[("API chat", 64)].tok_s / naive, 2),
    }
    added_ms = round(statistics.median(api_small) - statistics.median(engine_small), 2)
    print(f"\n{'mode':<22} {'conc':>4} {'req':>4} {'tokens':>6} {'tok/s':>7} {'req/s':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'TTFT p50':>9}")
    table = []
    for r in rows:
        s = r.summary() | {"req_s": round(r.requests / r.seconds, 2), "p99_ms": p99(r.latencies)}
        table.append(s)
        print(f"{s['mode']:<22} {s['concurrency']:>4} {s['requests']:>4} {s['tokens']:>6} {s['tok_s']:>7} {s['req_s']:>6} "
              f"{s['p50_ms']!s:>8} {s['p95_ms']!s:>8} {s['p99_ms']!s:>8} {s['ttft_p50_ms']!s:>9}")
    print("\nratios:")
    for k, v in ratios.items():
        print(f"  {k:<52} {v}x")
    print(f"\nlatency the API adds to a one-token chat (median of {len(api_small)}): {added_ms} ms "
          f"(API {statistics.median(api_small):.1f} ms, engine {statistics.median(engine_small):.1f} ms)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.json").write_text(json.dumps({"rows": table, "ratios": ratios, "added_latency_ms": added_ms,
                                              "api_small_ms": api_small, "engine_small_ms": engine_small}, indent=2))
    chart(rows, out / "api.png", ("engine", "API chat", "API chatStream"), "concurrent clients")
    print(f"wrote {out / 'api.json'} and {out / 'api.png'}")


def p99(xs: list[float]) -> float | None:
    return round(statistics.quantiles(xs, n=100)[98], 1) if len(xs) > 1 else (round(xs[0], 1) if xs else None)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api", description=__doc__.split("\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--small", type=int, default=30, help="one-token chats for the added-latency measure")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", default="bench-results")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
