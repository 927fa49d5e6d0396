"""`python -m benchmarks.engine_ab OLD_CHECKOUT`: this engine against an older checkout's, same prompts.

Each side runs in its own process (so each imports its own code): 64 chats of 64 new tokens added
at once, greedy, stepped to the end; tokens per second and the prefix cache hit rate. Sides
alternate for ``--rounds`` rounds, and the median ratio is printed. Make the old checkout with
``git worktree add /tmp/old <commit>``. ``--mode`` picks this engine's weights (the old one uses
its own defaults with ``max_running=64``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TOPICS = ["the sea", "a mountain", "coffee", "trains", "the moon", "bees", "winter", "a library"]


def side(repo: str, mode: str, chats: int) -> None:
    """One measurement, in this process: prints ``tok/s hit_rate``."""
    sys.path.insert(0, repo)
    from inference.boundary import ChatMessage, ChatRequest, SamplingParams
    from inference.engine.config import EngineConfig
    from inference.engine.llm_engine import LLMEngine

    llm = LLMEngine.from_config(EngineConfig(max_running=64) if mode == "old" else EngineConfig(weights=mode))
    for i in range(chats):
        llm.add(llm.prepare(ChatRequest(
            messages=(ChatMessage(role="system", content="You are a helpful assistant."),
             ChatMessage(role="user", content=f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} and the number {i}.")),
            params=SamplingParams(max_new_tokens=64))))
    started, tokens = time.perf_counter(), 0
    while llm.has_work():
        for out in llm.step():
            if out.completion is not None:
                tokens += out.completion.usage.completion_tokens
    s = llm.stats
    print(f"{tokens / (time.perf_counter() - started):.2f} {s.cached_prompt_tokens / max(1, s.cached_prompt_tokens + s.prompt_tokens):.3f}")


def run(repo: str, mode: str, chats: int) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.engine_ab", "--side", repo, "--mode", mode,
                          "--chats", str(chats)], capture_output=True, text=True, check=True)
    tps, hit = out.stdout.split()[-2:]
    return float(tps), float(hit)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_ab", description=__doc__.split("\n")[0])
    parser.add_argument("old", nargs="?", help="path of the older checkout")
    parser.add_argument("--mode", default="native", help="this engine's WEIGHTS (native or exact)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chats", type=int, default=64)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args.side, args.mode, args.chats)
        return
    ratios = []
    for r in range(args.rounds):
        old, old_hit = run(args.old, "old", args.chats)
        new, new_hit = run(".", args.mode, args.chats)
        ratios.append(new / old)
        print(f"round {r + 1}: old {old:.1f} tok/s (prefix hit rate {old_hit:.2f}), "
              f"new {args.mode} {new:.1f} tok/s (prefix hit rate {new_hit:.2f}), ratio {new / old:.2f}x", flush=True)
    print(f"median ratio new / old: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
