"""`python -m benchmarks.choices`: one chat with n = 8 against 8 concurrent chats of the same prompt.

The engine as users run it (default settings), a prompt of about 1,000 tokens, 64 new tokens per
answer, temperature 1 with seeds, the end-of-text tokens biased away (``logit_bias``) so that every
answer on both sides is 64 tokens long. Rounds alternate; each prints the time until the last answer and
the prompt tokens computed (the engine's counters), then the median ratio of times.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from inference.boundary import ChatMessage, ChatRequest, SamplingParams
from inference.engine.async_engine import AsyncEngine
from inference.engine.config import EngineConfig
from inference.engine.llm_engine import LLMEngine


def prompt(round_: int, words: int) -> tuple[ChatMessage, ...]:
    """A prompt of its own per round, so no round finds the one before it in the prefix cache."""
    facts = " ".join(f"Note {round_}.{i}: shelf {i} holds books on subject {i * 7 % 31}." for i in range(words // 9))
    return (ChatMessage(role="user", content=facts + " Summarise the notes in one sentence."),)


async def timed(engine: AsyncEngine, requests: list[ChatRequest]) -> tuple[float, int]:
    before = engine.stats().prompt_tokens
    started = time.perf_counter()
    await engine.generate_batch(requests)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(0.05)  # the step loop publishes its counters after the step
    return elapsed, engine.stats().prompt_tokens - before


async def main(args: argparse.Namespace) -> None:
    llm = LLMEngine.from_config(EngineConfig())
    engine = AsyncEngine(llm)
    await engine.start()
    try:
        no_end = tuple((token, -100.0) for token in sorted(llm.eos_ids))
        params = lambda seed, n=1: SamplingParams(max_new_tokens=args.tokens, temperature=1.0, seed=seed, n=n, logit_bias=no_end)
        await engine.generate(ChatRequest(messages=prompt(-1, 50), params=params(1)))  # warm-up
        ratios = []
        for i in range(args.rounds):
            n_time, n_prefill = await timed(engine, [ChatRequest(messages=prompt(2 * i, args.words), params=params(1, args.n))])
            messages = prompt(2 * i + 1, args.words)
            c_time, c_prefill = await timed(engine, [ChatRequest(messages=messages, params=params(1 + k)) for k in range(args.n)])
            ratios.append(n_time / c_time)
            print(f"round {i + 1}: n={args.n} {n_time:.2f} s ({n_prefill} prompt tokens computed), "
                  f"{args.n} concurrent chats {c_time:.2f} s ({c_prefill}), ratio {ratios[-1]:.2f}x", flush=True)
        print(f"median time ratio (n / concurrent) over {args.rounds} rounds: {statistics.median(ratios):.2f}x")
    finally:
        await engine.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--words", type=int, default=700, help="prompt length in words (about 1,000 tokens at 700)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
