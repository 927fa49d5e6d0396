"""Where a one-client chat's time goes, per token, from the request's arrival to its last token.

One client streams greedy chats through ``AsyncEngine`` (what both tiers call); every phase of the
worker's step loop and the hand-off to the event loop is timed by wrapping the engine's own
methods on this instance, and the consumer times the gaps between its deltas. The breakdown is
printed in milliseconds per token; "rest of the step loop" is what the named phases leave out.

    python -m benchmarks.one_stream [--tokens 128] [--rounds 3] [--weights native]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from inference.boundary import ChatMessage, ChatRequest, Completion, SamplingParams
from inference.engine.async_engine import AsyncEngine
from inference.engine.config import EngineConfig
from inference.engine.llm_engine import LLMEngine

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


class Profile:
    """Seconds summed by phase; only the worker thread writes the worker's phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.lock = threading.Lock()

    def add(self, phase: str, seconds: float) -> None:
        with self.lock:
            self.seconds[phase] += seconds

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        """Time every call of ``owner.name`` as ``phase`` (on this instance only)."""
        inner: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(phase, time.perf_counter() - t)

        setattr(owner, name, timed)


def instrument(ae: AsyncEngine, profile: Profile) -> None:
    engine = ae.engine
    runner, llama = engine.runner, engine.runner.llama
    profile.wrap(engine, "step", "step (all of it)")
    profile.wrap(engine.scheduler, "schedule", "schedule")
    profile.wrap(engine.scheduler, "commit", "commit")
    profile.wrap(runner, "_pack", "pack the step's tensors")
    profile.wrap(llama, "forward", "forward (all of it)")
    if llama.kernels is not None:
        profile.wrap(llama.kernels, "decode_layers", "forward: the layers")
        profile.wrap(llama.kernels, "q8_0", "forward: the head")
    profile.wrap(runner, "_sample", "sample")
    profile.wrap(engine, "_advance", "advance: detokenize, stop strings, format")
    profile.wrap(ae, "_publish", "publish stats")
    profile.wrap(ae.metrics, "observe_step", "metrics of the step")
    profile.wrap(ae, "_take_commands", "take commands")
    posted: dict[int, float] = {}
    loop_call = ae._loop.call_soon_threadsafe  # type: ignore[union-attr]
    dispatch = ae._dispatch

    def post(callback: Callable[..., Any], *args: Any) -> Any:
        if args:
            posted[id(args[0])] = time.perf_counter()
        return loop_call(callback, *args)

    def dispatched(outputs: Any) -> None:
        sent = posted.pop(id(outputs), None)
        if sent is not None:
            profile.add("hand-off: worker to event loop", time.perf_counter() - sent)
        dispatch(outputs)

    ae._loop.call_soon_threadsafe = post  # type: ignore[union-attr, method-assign]
    ae._dispatch = dispatched  # type: ignore[method-assign]


async def one_chat(ae: AsyncEngine, tokens: int) -> tuple[int, float, list[float], float]:
    """Tokens, seconds from submit to the last token, the gaps between deltas, time to first token. The prompt asks for a long story: greedy, it
    runs to ``tokens``."""
    request = ChatRequest(messages=(ChatMessage(role="user", content=PROMPT),),
                          params=SamplingParams(max_new_tokens=tokens, temperature=0.0))
    started = time.perf_counter()
    last, gaps, first, count = started, [], 0.0, 0
    async for event in ae.stream(request):
        now = time.perf_counter()
        if isinstance(event, Completion):
            count = event.usage.completion_tokens
            break
        if not first:
            first = now - started
        else:
            gaps.append(now - last)
        last = now
    return count, last - started, gaps, first


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", default="native", choices=["native", "exact"])
    args = parser.parse_args()
    ae = AsyncEngine(LLMEngine.from_config(EngineConfig(weights=args.weights, kv_cache_tokens=8192)))
    await ae.start()
    await one_chat(ae, 8)  # warm
    plain = []
    for _ in range(args.rounds):  # uninstrumented first: the wrappers' own cost must stay small
        n, seconds, _, _ = await one_chat(ae, args.tokens)
        plain.append(n / seconds)
    profile = Profile()
    instrument(ae, profile)
    tokens, total, gaps, ttft = 0, 0.0, [], []
    for _ in range(args.rounds):
        n, seconds, g, first = await one_chat(ae, args.tokens)
        tokens, total = tokens + n, total + seconds
        gaps += g
        ttft.append(first)
    await ae.stop()
    print(f"weights {ae.engine.weights.mode}; {args.rounds} chats of {args.tokens} tokens, one client")
    print(f"uninstrumented: {', '.join(f'{r:.1f}' for r in plain)} tok/s; instrumented: {tokens / total:.1f} tok/s")
    print(f"time to first token {statistics.median(ttft) * 1e3:.1f} ms (median); gap between deltas: median "
          f"{statistics.median(gaps) * 1e3:.2f} ms, p90 {statistics.quantiles(gaps, n=10)[-1] * 1e3:.2f} ms")
    per = {k: v / tokens * 1e3 for k, v in profile.seconds.items()}
    loop_parts = sum(per.get(k, 0.0) for k in ("step (all of it)", "publish stats", "metrics of the step", "take commands"))
    wall = total / tokens * 1e3
    print(f"\n{'ms per token':<48}{'':>8}")
    print(f"{'wall clock, per token':<48}{wall:8.3f}")
    for key in ("step (all of it)", "  schedule", "  pack the step's tensors", "  forward (all of it)", "    forward: the layers",
                "    forward: the head", "  sample", "  advance: detokenize, stop strings, format", "  commit"):
        print(f"{key:<48}{per.get(key.strip(), 0.0):8.3f}")
    step_parts = sum(per.get(k, 0.0) for k in ("schedule", "pack the step's tensors", "forward (all of it)", "sample",
                                               "advance: detokenize, stop strings, format", "commit"))
    fwd_parts = per.get("forward: the layers", 0.0) + per.get("forward: the head", 0.0)
    print(f"{'    forward: the rest (embedding, norm, gather)':<48}{per.get('forward (all of it)', 0.0) - fwd_parts:8.3f}")
    print(f"{'  step: the rest':<48}{per.get('step (all of it)', 0.0) - step_parts:8.3f}")
    for key in ("publish stats", "metrics of the step", "take commands"):
        print(f"{key:<48}{per.get(key, 0.0):8.3f}")
    print(f"{'rest of the wall clock (not named above)':<48}{wall - loop_parts:8.3f}")
    print(f"{'hand-off, worker to event loop (overlaps steps)':<48}{per.get('hand-off: worker to event loop', 0.0):8.3f}")


if __name__ == "__main__":
    asyncio.run(main())
