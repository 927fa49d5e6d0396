"""`python -m benchmarks.options_cost`: what penalties and logprobs cost at 64 concurrent chats.

The engine as users run it (default settings), 64 chats of 64 new tokens at once, greedy, rounds
alternating between plain chats and chats with every penalty on and logprobs with 5 alternatives.
Prints each round's tokens per second and the ratio of each pair of rounds, then their median.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time

from inference.boundary import ChatMessage, ChatRequest, SamplingParams
from inference.engine.async_engine import AsyncEngine
from inference.engine.config import EngineConfig
from inference.engine.llm_engine import LLMEngine

TOPICS = ["the sea", "a mountain", "coffee", "trains", "the moon", "bees", "winter", "a library"]
HEAVY = SamplingParams(repetition_penalty=1.1, frequency_penalty=0.3, presence_penalty=0.3, logit_bias=((28, -1.0),),
                       logprobs=True, top_logprobs=5)


def requests(n: int, tokens: int, heavy: bool) -> list[ChatRequest]:
    params = dataclasses.replace(HEAVY if heavy else SamplingParams(), max_new_tokens=tokens)
    return [ChatRequest(messages=(ChatMessage(role="user", content=f"Write a short paragraph about {TOPICS[i % 8]} and the number {i}."),),
                        params=params)
            for i in range(n)]


async def round_(engine: AsyncEngine, n: int, tokens: int, heavy: bool) -> tuple[float, float, int]:
    """Tokens per wall second, tokens per CPU second of this process (which a busy neighbour on a
    shared machine disturbs less), and tokens generated (answers that end early leave a smaller batch)."""
    started, cpu = time.perf_counter(), time.process_time()
    results = await engine.generate_batch(requests(n, tokens, heavy))
    generated = sum(r.usage.completion_tokens for r in results if hasattr(r, "usage"))
    return generated / (time.perf_counter() - started), generated / (time.process_time() - cpu), generated


async def main(args: argparse.Namespace) -> None:
    engine = AsyncEngine(LLMEngine.from_config(EngineConfig()))
    await engine.start()
    try:
        await round_(engine, args.clients, 8, False)  # warm-up
        ratios, cpu_ratios = [], []
        for i in range(args.rounds):
            plain, plain_cpu, plain_tokens = await round_(engine, args.clients, args.tokens, False)
            heavy, heavy_cpu, heavy_tokens = await round_(engine, args.clients, args.tokens, True)
            ratios.append(heavy / plain)
            cpu_ratios.append(heavy_cpu / plain_cpu)
            print(f"round {i + 1}: plain {plain:.1f} tok/s ({plain_cpu:.1f} per CPU s, {plain_tokens} tokens), "
                  f"penalties+logprobs {heavy:.1f} tok/s ({heavy_cpu:.1f}, {heavy_tokens}), "
                  f"ratio {ratios[-1]:.2f}x (CPU {cpu_ratios[-1]:.2f}x)", flush=True)
        print(f"median ratio over {args.rounds} rounds: {statistics.median(ratios):.2f}x "
              f"(per CPU second {statistics.median(cpu_ratios):.2f}x)")
    finally:
        await engine.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
