"""`python -m benchmarks.peer --ours URL --peer URL`: our inference service against another
OpenAI-compatible server (llama.cpp's llama-server from ../shared/peer/llama-server.sh) in one run.

Both get the same chat prompts, greedy, the same `max_tokens`, through `/v1/chat/completions`, at
each concurrency. Rounds alternate (ours, peer, ours, peer, ...) because this machine's speed
varies by the hour; the ratios printed are medians of per-round ratios. Tokens are the completion
tokens each server reports (a sequence may stop at EOS before `max_tokens`).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

TOPICS = ["the sea", "a mountain", "coffee", "trains", "the moon", "bees", "winter", "a library"]


def prompt(i: int) -> str:
    return f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} and the number {i}."


async def load(url: str, clients: int, chats: int, max_tokens: int) -> float:
    """Tokens per second for ``chats`` chats sent by ``clients`` concurrent clients."""
    queue = list(range(chats))
    tokens = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while queue:
            i = queue.pop(0)
            r = await http.post(f"{url}/v1/chat/completions", json={
                "messages": [{"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": prompt(i)}],
                "max_tokens": max_tokens, "temperature": 0})
            r.raise_for_status()
            tokens += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return tokens / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    chats = {1: args.chats_at_1, 8: 16, 64: 64}
    await load(args.ours, 1, 1, 4)
    await load(args.peer, 1, 1, 4)
    print(f"{'clients':>7} {'round':>5} {'ours tok/s':>10} {'peer tok/s':>10} {'ratio':>6}")
    for clients in args.clients:
        ratios = []
        for r in range(args.rounds):
            ours = await load(args.ours, clients, chats.get(clients, clients), args.max_tokens)
            peer = await load(args.peer, clients, chats.get(clients, clients), args.max_tokens)
            ratios.append(ours / peer)
            print(f"{clients:>7} {r + 1:>5} {ours:>10.1f} {peer:>10.1f} {ours / peer:>5.2f}x", flush=True)
        print(f"{clients:>7} median ratio {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__.split("\n")[0])
    parser.add_argument("--ours", default="http://127.0.0.1:8001")
    parser.add_argument("--peer", default="http://127.0.0.1:8090")
    parser.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--chats-at-1", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
