"""What the API tier costs in front of an upstream: the same chats through our GraphQL API in
remote mode and straight to the upstream's /v1/chat/completions, in one run, rounds alternating.

    python -m benchmarks.front --upstream http://127.0.0.1:8095   (vLLM from ../shared/peer/vllm-server.sh)

Loads: ``chat`` mutations from 64 concurrent clients against 64 concurrent direct calls; one
``chatBatched`` of 64 (one DataLoader batch) against the same 64 direct calls. Greedy, the same
prompts and ``max_tokens``; tokens are the completion tokens each side reports. The ratios are
medians of per-round ratios (API / direct).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from benchmarks.peer import messages, prompt
from benchmarks.serving import serve, stop, wait_ready

CHAT = "mutation($input: ChatInput!) { chat(input: $input) { ... on ChatSuccess { usage { completionTokens } } ... on ChatError { code message } } }"
BATCH = ("mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { results { ... on ChatSuccess { usage { completionTokens } } "
         "... on ChatError { code message } } } }")


def chat_input(i: int, max_tokens: int) -> dict:
    return {"chatId": f"c{i}", "userPrompt": prompt(i), "systemPrompt": "You are a helpful assistant.",
            "options": {"maxTokens": max_tokens, "temperature": 0}}


def tokens_of(result: dict) -> int:
    if "usage" not in result:
        raise RuntimeError(f"a chat failed: {result}")
    return int(result["usage"]["completionTokens"])


async def direct(http: httpx.AsyncClient, upstream: str, n: int, max_tokens: int) -> float:
    async def one(i: int) -> int:
        r = await http.post(f"{upstream}/v1/chat/completions", json={"model": "smollm2", "messages": messages(i),
                                                                      "max_tokens": max_tokens, "temperature": 0})
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(n))))
    return tokens / (time.perf_counter() - started)


async def via_chat(http: httpx.AsyncClient, api: str, n: int, max_tokens: int) -> float:
    async def one(i: int) -> int:
        r = await http.post(f"{api}/graphql", json={"query": CHAT, "variables": {"input": chat_input(i, max_tokens)}})
        return tokens_of(r.json()["data"]["chat"])

    started = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(n))))
    return tokens / (time.perf_counter() - started)


async def via_batch(http: httpx.AsyncClient, api: str, n: int, max_tokens: int) -> float:
    started = time.perf_counter()
    r = await http.post(f"{api}/graphql", json={"query": BATCH, "variables": {"inputs": [chat_input(i, max_tokens) for i in range(n)]}})
    tokens = sum(tokens_of(x) for x in r.json()["data"]["chatBatched"]["results"])
    return tokens / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    from graphql_api.app import create_app
    from graphql_api.settings import ApiSettings

    server, task, api = await serve(create_app(ApiSettings(inference_url=args.upstream)))
    try:
        async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=args.clients + 8)) as http:
            await wait_ready(http, api)
            await direct(http, args.upstream, 4, 8)
            await via_chat(http, api, 4, 8)
            rows: dict[str, list[float]] = {"direct": [], "chat": [], "direct (batch)": [], "chatBatched": []}
            for r in range(args.rounds):
                rows["direct"].append(await direct(http, args.upstream, args.clients, args.max_tokens))
                rows["chat"].append(await via_chat(http, api, args.clients, args.max_tokens))
                rows["direct (batch)"].append(await direct(http, args.upstream, args.clients, args.max_tokens))
                rows["chatBatched"].append(await via_batch(http, api, args.clients, args.max_tokens))
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items()) + " tok/s", flush=True)
    finally:
        await stop(server, task)
    ratio = lambda a, b: statistics.median(x / y for x, y in zip(rows[a], rows[b], strict=True))
    print(f"\n{args.clients} clients, {args.max_tokens} new tokens, {args.rounds} rounds")
    print(f"chat through the API / direct: {ratio('chat', 'direct'):.2f}x (by round: "
          + ", ".join(f"{a / b:.2f}" for a, b in zip(rows["chat"], rows["direct"], strict=True)) + ")")
    print(f"chatBatched of {args.clients} / {args.clients} direct calls: {ratio('chatBatched', 'direct (batch)'):.2f}x (by round: "
          + ", ".join(f"{a / b:.2f}" for a, b in zip(rows["chatBatched"], rows["direct (batch)"], strict=True)) + ")")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.front", description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", default="http://127.0.0.1:8095", help="the upstream's base URL (vLLM's by default)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
