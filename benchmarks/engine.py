"""`python -m benchmarks.engine`: the engine against model.generate, side by side in one run.

Measures on one fixed set of varied chat prompts, greedy, the same max_new_tokens everywhere
(sequences may stop early at EOS):
- naive: each prompt alone through ``model.generate``, one after another;
- static: ``model.generate`` on left-padded batches of 8, 32 and 64 prompts;
- engine: 1, 8, 32 and 64 concurrent clients, each sending its next prompt when the last is done
  (128 prompts: two waves for 64 clients, as a service sees a stream of requests, not one batch);
- join: time to first token of a request that arrives while 63 others decode;
- overhead: the share of a step at batch 64 spent outside the model's forward pass.
Prints a table and the ratios; writes bench-results/engine.json and engine.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from inference.boundary import ChatMessage, ChatRequest, SamplingParams
from inference.engine.async_engine import AsyncEngine
from inference.engine.config import EngineConfig
from inference.engine.llm_engine import LLMEngine

SUBJECTS = ["the ocean", "a robot", "autumn", "coffee", "the moon", "a lighthouse", "jazz", "mountains"]
TASKS = [
    "Write a haiku about {}.",
    "Explain {} to a child in two sentences.",
    "Give three facts about {}.",
    "Write a short story opening about {}.",
    "What is the most interesting thing about {}?",
    "Describe {} in one word.",
    "List five words related to {}.",
    "Write a limerick about {}.",
    "Why do people love {}?",
    "Write a two-line poem about {}.",
    "Tell me a joke about {}.",
    "Summarize the history of {} briefly.",
    "Compare {} to a city.",
    "What colour is {}? Answer briefly.",
    "Write a product slogan for {}.",
    "Give one tip for someone who loves {}.",
]
PROMPTS = [task.format(subject) for task in TASKS for subject in SUBJECTS]  # 128 varied prompts


def request(prompt: str, max_new_tokens: int) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage(role="system", content="You are a helpful assistant."), ChatMessage(role="user", content=prompt)),
                       params=SamplingParams(max_new_tokens=max_new_tokens))


@dataclass
class Row:
    mode: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds

    def summary(self) -> dict:
        pct = lambda xs, q: round(statistics.quantiles(xs, n=100)[q - 1], 1) if len(xs) > 1 else (round(xs[0], 1) if xs else None)
        return {"mode": self.mode, "concurrency": self.concurrency, "requests": self.requests, "tokens": self.tokens,
                "seconds": round(self.seconds, 2), "tok_s": round(self.tok_s, 1),
                "p50_ms": pct(self.latencies, 50), "p95_ms": pct(self.latencies, 95),
                "ttft_p50_ms": pct(self.ttfts, 50), "ttft_p95_ms": pct(self.ttfts, 95)}


def generated_tokens(rows: torch.Tensor, eos: set[int]) -> list[int]:
    """Tokens each row really generated: up to and including its first EOS."""
    counts = []
    for row in rows.tolist():
        n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        counts.append(n)
    return counts


def run_generate(engine: LLMEngine, prompts: list[str], batch: int, max_new: int) -> Row:
    tok = engine.tokenizer
    tok.padding_side = "left"
    eos = set(engine.eos_ids)
    row = Row("naive generate" if batch == 1 else "static generate", batch, len(prompts), 0, 0.0)
    started = time.perf_counter()
    for i in range(0, len(prompts), batch):
        ids = [engine.prepare(request(p, max_new)).prompt_ids for p in prompts[i:i + batch]]
        width = max(map(len, ids))
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = engine.model.generate(input_ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                        pad_token_id=tok.pad_token_id)
        elapsed = (time.perf_counter() - t0) * 1000
        row.tokens += sum(generated_tokens(out[:, width:], eos))
        row.latencies += [elapsed] * len(ids)
    row.seconds = time.perf_counter() - started
    return row


async def run_engine(ae: AsyncEngine, prompts: list[str], concurrency: int, max_new: int) -> Row:
    queue = list(prompts)
    row = Row("engine", concurrency, len(prompts), 0, 0.0)

    async def client() -> None:
        while queue:
            result = await ae.generate(request(queue.pop(0), max_new))
            row.tokens += result.usage.completion_tokens
            row.latencies.append(result.timings.total_ms)
            row.ttfts.append(result.timings.first_token_ms or 0.0)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    row.seconds = time.perf_counter() - started
    return row


async def join_latency(ae: AsyncEngine) -> dict:
    """TTFT of a request alone, and of a like one arriving while 63 others decode, in decode steps."""
    stats, scheduler = ae.engine.stats, ae.engine.scheduler
    alone = await ae.generate(request("Describe a quiet harbour at dawn.", 8))
    background = [asyncio.ensure_future(ae.generate(request(p, 400))) for p in PROMPTS[:63]]
    while scheduler.waiting or len(scheduler.running) < 63 or not all(s.prefill_done for s in list(scheduler.running)):
        await asyncio.sleep(0.01)
    steps0, step_s0 = stats.steps, stats.step_seconds
    await asyncio.sleep(1.0)
    step_ms = (stats.step_seconds - step_s0) / max(1, stats.steps - steps0) * 1000
    joined = await ae.generate(request("Describe a busy market at noon.", 8))
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    prefill_ms = alone.timings.first_token_ms or 0.0
    joined_ms = joined.timings.first_token_ms or 0.0
    return {"ttft_alone_ms": round(prefill_ms, 1), "decode_step_ms_at_63": round(step_ms, 1),
            "ttft_joining_ms": round(joined_ms, 1),
            "ttft_joining_in_steps_beyond_prefill": round((joined_ms - prefill_ms) / step_ms, 2)}


async def overhead(ae: AsyncEngine, max_new: int) -> dict:
    """Share of step time outside the forward pass (scheduling, packing, sampling, detokenizing)."""
    s = ae.engine.stats
    step0, fwd0, n0 = s.step_seconds, s.forward_seconds, s.steps
    await ae.generate_batch([request(p, max_new) for p in PROMPTS[:64]])
    step, fwd = s.step_seconds - step0, s.forward_seconds - fwd0
    return {"steps": s.steps - n0, "step_ms": round(step / (s.steps - n0) * 1000, 1),
            "outside_forward_pct": round((step - fwd) / step * 100, 2)}


def chart(rows: list[Row], path: Path,
          modes: tuple[str, ...] = ("engine", "static generate", "naive generate"),
          xlabel: str = "concurrency / batch size") -> None:
    """Throughput and p50 latency against concurrency, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, style in zip(modes, ("o-", "s--", "^:"), strict=False):
        pts = sorted((r.concurrency, r.tok_s, r.summary()["p50_ms"]) for r in rows if r.mode == mode)
        if pts:
            a.plot([p[0] for p in pts], [p[1] for p in pts], style, label=mode)
            b.plot([p[0] for p in pts], [p[2] for p in pts], style, label=mode)
    a.set(xscale="log", xlabel=xlabel, ylabel="generated tokens/s", title="Throughput")
    b.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="p50 latency (ms)", title="Latency")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> None:
    llm = LLMEngine.from_config(EngineConfig(max_running=64))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    ae = AsyncEngine(llm)
    await ae.start()
    try:
        await ae.generate(request(PROMPTS[0], 4))  # warm-up
        rows.append(run_generate(llm, PROMPTS[:args.naive], 1, args.max_new_tokens))
        for c in (1, 8, 32, 64):
            rows.append(await run_engine(ae, PROMPTS[:args.naive] if c == 1 else PROMPTS, c, args.max_new_tokens))
            print(rows[-1].summary(), flush=True)
        for b in (8, 32, 64):
            rows.append(run_generate(llm, PROMPTS, b, args.max_new_tokens))
            print(rows[-1].summary(), flush=True)
        join = await join_latency(ae)
        cost = await overhead(ae, args.max_new_tokens)
    finally:
        await ae.stop()
    report(rows, join, cost, out)


def report(rows: list[Row], join: dict, cost: dict, out: Path) -> None:
    by = {(r.mode, r.concurrency): r for r in rows}
    naive = by[("naive generate", 1)].tok_s
    ratios = {f"engine@{c} / naive": round(by[("engine", c)].tok_s / naive, 2) for c in (1, 8, 32, 64)}
    ratios |= {f"engine@{b} / static@{b}": round(by[("engine", b)].tok_s / by[("static generate", b)].tok_s, 2)
               for b in (8, 32, 64)}
    print(f"\n{'mode':<16} {'conc':>4} {'req':>4} {'tokens':>6} {'tok/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'TTFT p50':>9} {'TTFT p95':>9}")
    for r in rows:
        s = r.summary()
        print(f"{s['mode']:<16} {s['concurrency']:>4} {s['requests']:>4} {s['tokens']:>6} {s['tok_s']:>7} "
              f"{s['p50_ms']!s:>8} {s['p95_ms']!s:>8} {s['ttft_p50_ms']!s:>9} {s['ttft_p95_ms']!s:>9}")
    print("\nratios (tokens/s):")
    for k, v in ratios.items():
        print(f"  {k:<24} {v}x")
    print(f"\njoining a decoding batch of 63: {join}")
    print(f"step cost outside the forward pass at batch 64: {cost}")
    (out / "engine.json").write_text(json.dumps({"rows": [r.summary() for r in rows], "ratios": ratios,
                                                 "join": join, "overhead": cost, "torch_threads": torch.get_num_threads()}, indent=2))
    chart(rows, out / "engine.png")
    print(f"\nwrote {out / 'engine.json'} and {out / 'engine.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--naive", type=int, default=8, help="prompts for the sequential baselines (slow)")
    parser.add_argument("--out", default="bench-results")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
