"""`python -m benchmarks.structured`: structured output against free text, side by side in one run.

64 clients send the same 128 prompts ("... Answer as JSON.") in rounds that alternate between
free text and a JSON Schema on every chat (the test schemas in turn), greedy. The load is the
same in both: a first JSON round records how many tokens each chat's JSON answer takes, and the
free chat gets that as its max_new_tokens (free answers are longer, so they run to it). Prints
tokens/s per round, the median ratio (JSON Schema / free), the time per step spent filling and
applying masks and its share of the step, and the compile time of the test schemas (fresh, and
cached by schema text).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from inference.boundary import ChatMessage, ChatRequest, ResponseFormat, SamplingParams
from inference.engine.async_engine import AsyncEngine
from inference.engine.config import EngineConfig
from inference.engine.llm_engine import LLMEngine
from inference.engine.structured import FormatCompiler

from .engine import PROMPTS
from .schemas import PERSON, SCHEMAS

FORMATS = [ResponseFormat.of(json_schema=s) for s in [*SCHEMAS.values(), PERSON]]


def request(i: int, formatted: bool, max_new: int) -> ChatRequest:
    messages = (ChatMessage(role="system", content="You are a helpful assistant."), ChatMessage(role="user", content=PROMPTS[i] + " Answer as JSON."))
    fmt = FORMATS[i % len(FORMATS)] if formatted else None
    return ChatRequest(messages=messages, params=SamplingParams(max_new_tokens=max_new, response_format=fmt))


async def run_round(ae: AsyncEngine, formatted: bool, clients: int, max_new: list[int]) -> dict:
    """One round of every prompt; chat i gets ``max_new[i]`` tokens at most (its length is
    recorded there after a formatted round)."""
    queue = list(range(len(PROMPTS)))
    stats, masks = ae.engine.stats, ae.engine.runner.masks
    tokens = 0
    steps0, step_s0, mask_s0, mask_n0 = stats.steps, stats.step_seconds, masks.seconds, masks.steps

    async def client() -> None:
        nonlocal tokens
        while queue:
            i = queue.pop(0)
            result = await ae.generate(request(i, formatted, max_new[i]))
            tokens += result.usage.completion_tokens
            if formatted:
                max_new[i] = result.usage.completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    steps, step_s = stats.steps - steps0, stats.step_seconds - step_s0
    masked = masks.steps - mask_n0
    mask_ms = (masks.seconds - mask_s0) / masked * 1000 if masked else 0.0
    return {"mode": "json_schema" if formatted else "free", "tokens": tokens, "seconds": round(seconds, 2),
            "tok_s": round(tokens / seconds, 1), "chats_s": round(len(PROMPTS) / seconds, 2),
            "step_ms": round(step_s / steps * 1000, 1), "mask_ms_per_step": round(mask_ms, 2),
            "mask_share_pct": round((masks.seconds - mask_s0) / step_s * 100, 2)}


def compile_times(llm: LLMEngine, repeat: int) -> dict:
    """Milliseconds to compile each test schema with an empty cache, and again from the cache."""
    fresh, cached = [], []
    for _ in range(repeat):
        compiler = FormatCompiler(llm.tokenizer, llm.eos_ids, llm.model.config.vocab_size)
        for fmt in FORMATS:
            t = time.perf_counter()
            compiler.compile(fmt)
            fresh.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            compiler.compile(fmt)
            cached.append((time.perf_counter() - t) * 1000)
    p95 = lambda xs: round(statistics.quantiles(xs, n=100)[94], 3)
    return {"compiles": len(fresh), "fresh_p50_ms": round(statistics.median(fresh), 3), "fresh_p95_ms": p95(fresh),
            "cached_p95_ms": p95(cached)}


async def main_async(args: argparse.Namespace) -> None:
    llm = LLMEngine.from_config(EngineConfig(max_running=args.clients))
    llm.formats.adapter  # noqa: B018  # the tokenizer adapter, built once (about 0.7 s), before timing
    compiled = compile_times(llm, args.compile_repeat)
    ae = AsyncEngine(llm)
    await ae.start()
    rows = []
    try:
        lengths = [args.max_new_tokens] * len(PROMPTS)
        print("lengths:", await run_round(ae, True, args.clients, lengths), flush=True)  # warm-up; records lengths
        for _ in range(args.rounds):
            for formatted in (False, True):
                rows.append(await run_round(ae, formatted, args.clients, lengths))
                print(rows[-1], flush=True)
    finally:
        await ae.stop()
    free = statistics.median(r["tok_s"] for r in rows if r["mode"] == "free")
    constrained = [r for r in rows if r["mode"] == "json_schema"]
    ratio = statistics.median(r["tok_s"] for r in constrained) / free
    print(f"\n{args.clients} clients, {len(PROMPTS)} chats a round ({sum(lengths)} tokens), {args.rounds} rounds each")
    print(f"throughput, JSON Schema / free (median tok/s): {ratio:.2f}x")
    print(f"masks: {statistics.median(r['mask_ms_per_step'] for r in constrained):.2f} ms per step, "
          f"{statistics.median(r['mask_share_pct'] for r in constrained):.2f}% of step time "
          f"(step {statistics.median(r['step_ms'] for r in constrained):.1f} ms)")
    print(f"schema compile: {compiled}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.structured", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--compile-repeat", type=int, default=25)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
