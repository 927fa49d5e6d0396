"""`python -m benchmarks.peer --peer NAME=URL ...`: our inference service against other
OpenAI-compatible servers (llama.cpp's llama-server from ../shared/peer/llama-server.sh, vLLM from
../shared/peer/vllm-server.sh) in one run; `--peer` may be given several times.

`--serve native,exact` starts one service of ours per weights mode (`python -m inference serve`,
`WEIGHTS=...`) on free ports, times how long each takes to be ready, and stops them at the end;
`--ours NAME=URL` adds a server that is already running. Every server gets the same chat prompts,
greedy, the same `max_tokens`, through `/v1/chat/completions`, at each concurrency. Rounds
alternate (each of ours, then the peer, ...) because this machine's speed varies by the hour; the
ratios printed are medians of per-round ratios. Tokens are the completion tokens each server
reports. Each server's turn starts once the machine is idle again (``settle``): vLLM's CPU build
keeps a core busy for about a second after its last answer. Before a load's timed rounds each
server answers it once, untimed (`--warm`, on by default): the loads send the same prompts every
round, and a peer kept running from an earlier run holds them in its prefix cache where a server
this run starts does not, which made the first round's ratio depend on the peer's uptime. `--copy` (on by default) adds a
one-client load whose answers copy from their prompts, where prompt lookup drafts right: a round
is one chat of each task (repeat a passage exactly, repeat it with its spelling corrected,
extract its names, places, numbers and dates as JSON, summarise it), in plain text. Time to first
token is measured at one client with streaming. `--extract` (on by default) adds a one-client
load of JSON extraction, one text of each schema of ``benchmarks.extraction_set`` a round, its
schema as the response format, up to 200 tokens. `--graphql` (on by default) adds our GraphQL API
with its embedded engine (`python -m graphql_api`) to the chat, copying and extraction loads,
through the `chat` mutation. The prefill load sends unique prompts of about 1,400 tokens (no prefix cache can hold them) for one
token each, at 1 and 8 clients, in prompt tokens per second; the long-context load decodes at one
client after a prompt of about 4,000 tokens, timed from the first streamed delta to the last. The
shared llama.cpp script gives each of its 64 slots 1,024 tokens; the long loads need
`LLAMA_ARG_KV_UNIFIED=1` (one pool for all slots) when it is started. Resident memory (VmRSS) of
each process is read after the loads (`--peer-pid-file NAME=PATH` names a peer's pid file; the shared scripts' own are found by default
for `llama.cpp` and `vllm`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from benchmarks.extraction_set import CASES, SCHEMAS
from benchmarks.extraction_set import prompt as extraction_prompt

TOPICS = ["the sea", "a mountain", "coffee", "trains", "the moon", "bees", "winter", "a library"]
PID_FILES = {"llama.cpp": Path.home() / ".cache" / "llama-server" / "server-8090.pid",
             "vllm": Path.home() / ".cache" / "vllm-server" / "server-8095.pid"}


def prompt(i: int) -> str:
    return f"Write a short paragraph about {TOPICS[i % len(TOPICS)]} and the number {i}."


PASSAGES = [
    "The Eiffel Tower, completed in 1889 for the World's Fair in Paris, stands 330 metres tall and was designed by "
    "Gustave Eiffel's company. It was the tallest man-made structure in the world until 1930.",
    "Maria Lopez moved from Madrid to Berlin in 2019 to work as a nurse at the Charite hospital, where she now leads "
    "a team of twelve on the night shift.",
    "The meeting is moved from Tuesday to Thursday at 3 pm in room 204; bring the quarterly report, the budget draft "
    "and the list of open positions.",
]


# The passages with spelling mistakes, for "repeat with corrections".
MISSPELT = [
    "The Eifel Tower, completed in 1889 for the Worlds Fair in Paris, stands 330 metres tall and was desinged by "
    "Gustave Eiffel's company. It was the tallest man-made structure in the wrold until 1930.",
    "Maria Lopez moved from Madrid to Berlin in 2019 to work as a nurse at the Charite hospital, were she now leads "
    "a team of twelve on the nigth shift.",
    "The meeting is moved from Tuesday to Thursday at 3 pm in room 204; bring the quartely report, the budget draft "
    "and the list of open positons.",
]

# The prompt-copying tasks: each answer takes much of its text from its prompt, the load where
# prompt lookup drafts right; one chat of each a round, a different passage each time.
COPY_TASKS = [
    ("repeat", lambda i: f"Repeat this text exactly, correcting nothing: {PASSAGES[i % len(PASSAGES)]}"),
    ("correct", lambda i: f"Repeat this text with its spelling mistakes corrected: {MISSPELT[i % len(MISSPELT)]}"),
    ("extract", lambda i: "Extract every name, place, number and date in this text as a JSON object with the keys "
                          f"names, places, numbers and dates: {PASSAGES[i % len(PASSAGES)]}"),
    ("summarise", lambda i: f"Summarise this text in one sentence, keeping its names and numbers: {PASSAGES[i % len(PASSAGES)]}"),
]


def copy_prompt(i: int) -> str:
    """The ``i``-th prompt of the copying load: task ``i`` mod 4, passage ``i`` mod 3."""
    return COPY_TASKS[i % len(COPY_TASKS)][1](i)


WORDS = ("the river city winter morning garden letter window market teacher silver mountain quiet bridge train "
         "island doctor village music paper summer forest station kitchen harbor candle painter orange engine "
         "library storm meadow lantern castle pocket ribbon valley thunder basket pillow wander gentle crimson "
         "hollow narrow bright ancient golden frozen distant hidden simple careful sudden patient curious").split()


def passage(seed: int | str, words: int) -> str:
    """``words`` words of sentences no other seed starts with (so no server's prefix cache holds them)."""
    import random

    rng = random.Random(seed)
    out, count = [f"Record {seed}."], 2
    while count < words:
        sentence = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
        out.append(" ".join(sentence).capitalize() + ".")
        count += len(sentence)
    return " ".join(out)


def long_messages(seed: int | str, words: int, ask: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"{passage(seed, words)}\n\n{ask}"}]


# The structured extraction load: the first case of each schema of the extraction set, its schema
# as the response format (ours: GraphQL's responseFormat.jsonSchema; others: OpenAI's json_schema).
EXTRACT_CASES = [next(c for c in CASES if c["schema"] == name) for name in SCHEMAS]
EXTRACT_MAX_TOKENS = 200  # room for every case's whole JSON (as benchmarks.extraction gives it)


def user_prompt(i: int, kind: str) -> str:
    if kind == "copy":
        return copy_prompt(i)
    if kind == "extract":
        return extraction_prompt(EXTRACT_CASES[i % len(EXTRACT_CASES)])
    return prompt(i)


def messages(i: int, kind: str = "chat") -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user_prompt(i, kind)}]


@dataclass
class Server:
    name: str
    url: str
    pid: int | None = None
    process: subprocess.Popen | None = None
    ready_s: float | None = None
    results: dict[int, list[float]] = field(default_factory=dict)
    ttft_ms: list[float] = field(default_factory=list)
    copy: list[float] = field(default_factory=list)  # tok/s at one client on the copying load
    extract: list[float] = field(default_factory=list)  # tok/s at one client extracting JSON under a schema
    prefill: dict[int, list[float]] = field(default_factory=dict)  # prompt tok/s of unique long prompts, by clients
    long_decode: list[float] = field(default_factory=list)  # tok/s decoding at one client with a long context
    kind: str = "openai"  # or "graphql": our GraphQL API's chat mutation


CHAT = "mutation($input: ChatInput!) { chat(input: $input) { ... on ChatSuccess { usage { completionTokens } } ... on ChatError { code message } } }"


async def one_chat(http: httpx.AsyncClient, server: Server, i: int, max_tokens: int, kind: str) -> int:
    """One greedy chat; its completion tokens as the server reports them (an answer cut off inside
    its format, which ours reports as INCOMPLETE_OUTPUT, counts ``max_tokens``)."""
    schema = SCHEMAS[EXTRACT_CASES[i % len(EXTRACT_CASES)]["schema"]] if kind == "extract" else None
    if server.kind == "graphql":
        options: dict = {"maxTokens": max_tokens, "temperature": 0}
        if schema is not None:
            options["responseFormat"] = {"jsonSchema": schema}
        chat_input = {"chatId": f"c{i}", "userPrompt": user_prompt(i, kind), "systemPrompt": "You are a helpful assistant.",
                      "options": options}
        r = await http.post(f"{server.url}/graphql", json={"query": CHAT, "variables": {"input": chat_input}})
        r.raise_for_status()
        result = r.json()["data"]["chat"]
        if result.get("code") == "INCOMPLETE_OUTPUT":
            return max_tokens
        if "usage" not in result:
            raise RuntimeError(f"a chat failed: {result}")
        return int(result["usage"]["completionTokens"])
    body: dict = {"messages": messages(i, kind), "max_tokens": max_tokens, "temperature": 0}
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "extraction", "schema": schema}}
    r = await http.post(f"{server.url}/v1/chat/completions", json=body)
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"])


async def send_chats(http: httpx.AsyncClient, server: Server, clients: int, chats: int, max_tokens: int, kind: str) -> int:
    """``chats`` chats sent by ``clients`` concurrent clients, each sending its next when its last
    is answered; the completion tokens of all of them."""
    queue = list(range(chats))
    counted: list[int] = []

    async def client() -> None:
        while queue:
            # Each answer is kept apart: ``total += await ...`` would read the total before the
            # await and write it back after, losing the tokens of every chat answered meanwhile.
            counted.append(await one_chat(http, server, queue.pop(0), max_tokens, kind))

    await asyncio.gather(*(client() for _ in range(clients)))
    return sum(counted)


async def load(server: Server, clients: int, chats: int, max_tokens: int, kind: str = "chat") -> float:
    """Tokens per second for ``chats`` chats sent by ``clients`` concurrent clients."""
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        started = time.perf_counter()
        tokens = await send_chats(http, server, clients, chats, max_tokens, kind)
        return tokens / (time.perf_counter() - started)


async def prefill(url: str, clients: int, prompts: int, words: int, seed: str) -> tuple[float, float]:
    """Prompt tokens per second for ``prompts`` unique prompts of ``words`` words sent by
    ``clients`` concurrent clients, one new token each; and their mean prompt tokens. ``seed``
    names the prompts: one per run, load and round, so that no server has seen them (a server's
    prefix cache outlives a run: vLLM's answered a second run's prompts at 10,000 tokens a second)."""
    queue = list(range(prompts))
    counted: list[int] = []

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop(0)
            body = {"messages": long_messages(f"{seed}-{i}", words, "Say OK."), "max_tokens": 1, "temperature": 0}
            r = await http.post(f"{url}/v1/chat/completions", json=body)
            r.raise_for_status()
            counted.append(r.json()["usage"]["prompt_tokens"])

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return sum(counted) / (time.perf_counter() - started), statistics.mean(counted)


async def long_decode(url: str, words: int, max_tokens: int) -> tuple[float, int]:
    """Tokens per second of one streamed answer after a long prompt, from its first content delta
    to its last (so the prompt's prefill is not counted), and the prompt's tokens. The same prompt
    every round: the servers' prefix caches may hold it; only decoding is timed."""
    body = {"messages": long_messages(4242, words, "Write a long story that continues this record."), "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    first = last = 0.0
    usage: dict = {}
    async with httpx.AsyncClient(timeout=600) as http, aconnect_sse(http, "POST", f"{url}/v1/chat/completions", json=body) as events:
        async for event in events.aiter_sse():
            if event.data == "[DONE]":
                break
            chunk = json.loads(event.data)
            usage = chunk.get("usage") or usage
            if chunk["choices"] and chunk["choices"][0].get("delta", {}).get("content"):
                last = time.perf_counter()
                first = first or last
    if not usage or usage["completion_tokens"] < 2 or last <= first:
        raise RuntimeError(f"{url}: the long-context answer was too short to time ({usage})")
    return (usage["completion_tokens"] - 1) / (last - first), usage["prompt_tokens"]


async def first_token_ms(url: str, i: int) -> float:
    """Milliseconds from sending a streamed chat to its first content delta."""
    async with httpx.AsyncClient(timeout=600) as http:
        started = time.perf_counter()
        body = {"messages": messages(i), "max_tokens": 8, "temperature": 0, "stream": True}
        async with aconnect_sse(http, "POST", f"{url}/v1/chat/completions", json=body) as events:
            async for event in events.aiter_sse():
                if event.data == "[DONE]":
                    break
                delta = json.loads(event.data)["choices"][0].get("delta", {})
                if delta.get("content"):
                    return (time.perf_counter() - started) * 1000
    raise RuntimeError(f"{url} streamed no content")


async def prefix_hit_rate(url: str) -> float | None:
    """Our service's ``smollm_prefix_cache_hit_rate`` from ``/metrics`` (None for other servers)."""
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{url}/metrics")
    for line in r.text.splitlines():
        if line.startswith("smollm_prefix_cache_hit_rate "):
            return float(line.split()[1])
    return None


def cpu_idle_ticks() -> tuple[int, int]:
    """The machine's idle (and iowait) ticks and all its ticks, from ``/proc/stat``."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)


async def settle(window: float = 0.25, idle: float = 0.9, limit: float = 15.0) -> float:
    """Wait until the machine is idle (``idle`` of its CPU time idle in two windows in a row), at
    most ``limit`` seconds; the seconds waited. A server may keep a core busy after its last
    answer (vLLM's CPU build spins one core for about a second), and the next server's turn
    would pay for it."""
    started = time.perf_counter()
    calm, before = 0, cpu_idle_ticks()
    while calm < 2 and time.perf_counter() - started < limit:
        await asyncio.sleep(window)
        now = cpu_idle_ticks()
        calm = calm + 1 if (now[0] - before[0]) >= idle * max(1, now[1] - before[1]) else 0
        before = now
    return time.perf_counter() - started


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_ours(mode: str, graphql: bool = False) -> Server:
    """Our inference service (``python -m inference serve``) or, ``graphql``, our GraphQL API with
    its embedded engine (``python -m graphql_api``), on a free port."""
    port = free_port()
    env = {**os.environ, "WEIGHTS": mode, "INFERENCE_PORT": str(port), "PORT": str(port)}
    started = time.perf_counter()
    command = [sys.executable, "-m", "graphql_api"] if graphql else [sys.executable, "-m", "inference", "serve"]
    process = await asyncio.to_thread(subprocess.Popen, command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(f"ours-graphql-{mode}" if graphql else f"ours-{mode}", f"http://127.0.0.1:{port}", process.pid, process,
                    kind="graphql" if graphql else "openai")
    async with httpx.AsyncClient(timeout=2) as http:
        while time.perf_counter() - started < 300:
            if process.poll() is not None:
                raise RuntimeError(f"our {mode} server exited with {process.returncode}")
            try:
                if (await http.get(f"{server.url}/readyz")).status_code == 200:
                    server.ready_s = time.perf_counter() - started
                    return server
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"our {mode} server was not ready in 300 s")


def write_results(servers: list[Server], args: argparse.Namespace) -> None:
    """``bench-results/peer.json`` and a chart of median tokens per second, ``peer.png``."""
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    data = {s.name: {"tok_s": {str(c): v for c, v in s.results.items()}, "ttft_ms": s.ttft_ms,
                     "ready_s": s.ready_s, "rss_mb": rss_mb(s.pid)} for s in servers}
    (out / "peer.json").write_text(json.dumps(data, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(servers)
    for k, s in enumerate(servers):
        xs = [i + k * width for i in range(len(args.clients))]
        ax.bar(xs, [statistics.median(s.results[c]) for c in args.clients], width, label=s.name)
    ax.set_xticks([i + width * (len(servers) - 1) / 2 for i in range(len(args.clients))],
                  [f"{c} clients" for c in args.clients])
    ax.set_ylabel("tokens/s (median of rounds)")
    ax.set_title(f"/v1/chat/completions, greedy, {args.max_tokens} new tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "peer.png", dpi=110)


def table_row(label: str, everyone: list[Server], pairs: list[tuple[Server, Server]], values: Callable[[Server], list[float]]) -> str:
    """One markdown row: each server's median, then each pair's median of per-round ratios ("-"
    where a server did not run the load)."""
    medians = [f"{statistics.median(values(s)):.1f}" if values(s) else "-" for s in everyone]
    ratios = [f"{statistics.median(a / b for a, b in zip(values(s), values(p), strict=True)):.2f}x" if values(s) and values(p) else "-"
              for s, p in pairs]
    return f"| {label} | " + " | ".join(medians) + " | " + " | ".join(ratios) + " |"


async def rounds(servers: list[Server], label: str, unit: str, rounds: int, run: Callable[[Server], Awaitable[float]],
                 keep: Callable[[Server], list[float]], warm: bool) -> None:
    """``rounds`` rounds of one load, servers alternating within each; printed as they come. With
    ``warm``, each server first runs the load once, untimed, so that every timed round finds its
    prompts in every server's prefix cache."""
    if warm:
        for s in servers:
            await run(s)
    for r in range(rounds):
        line = []
        for s in servers:
            await settle()
            value = await run(s)
            keep(s).append(value)
            line.append(f"{s.name} {value:6.1f}")
        print(f"{label}, round {r + 1}: " + ", ".join(line) + f" {unit}", flush=True)


def chat_load(clients: int, chats: int, max_tokens: int, kind: str) -> Callable[[Server], Awaitable[float]]:
    return lambda s: load(s, clients, chats, max_tokens, kind)


def results_at(clients: int) -> Callable[[Server], list[float]]:
    return lambda s: s.results.setdefault(clients, [])


def prefill_at(clients: int) -> Callable[[Server], list[float]]:
    return lambda s: s.prefill.setdefault(clients, [])


async def main(args: argparse.Namespace) -> None:
    ours = [await start_ours(mode) for mode in args.serve]
    if args.graphql:
        ours.append(await start_ours("native", graphql=True))
    ours += [Server(name, url) for name, url in (spec.split("=", 1) for spec in args.ours)]
    pid_files = PID_FILES | {n: Path(f) for n, f in (spec.split("=", 1) for spec in args.peer_pid_file)}
    peers = []
    for spec in args.peer or ["llama.cpp=http://127.0.0.1:8090"]:
        name, url = spec.split("=", 1) if "=" in spec else ("peer", spec)
        pid_file = pid_files.get(name)
        peers.append(Server(name, url, int(pid_file.read_text()) if pid_file and pid_file.is_file() else None))
    everyone = [*ours, *peers]
    openai = [s for s in everyone if s.kind == "openai"]  # the loads that read usage or stream tokens
    try:
        for s in everyone:
            await load(s, 1, 1, 4)  # warm-up
            if s.ready_s is not None:
                print(f"{s.name}: ready {s.ready_s:.1f} s after start")
        chats = {1: args.chats_at_1, 8: 16}
        for clients in args.clients:
            await rounds(everyone, f"{clients:>3} clients", "tok/s", args.rounds,
                         chat_load(clients, chats.get(clients, clients), args.max_tokens, "chat"), results_at(clients),
                         args.warm)
        if args.copy:  # one client, answers that copy from their prompts
            await rounds(everyone, "  1 client copying", "tok/s", args.rounds,
                         chat_load(1, args.copy_chats, args.max_tokens, "copy"), lambda s: s.copy, args.warm)
        if args.extract:  # one client, JSON extraction under each case's schema
            await rounds(everyone, "  1 client extracting JSON", "tok/s", args.rounds,
                         chat_load(1, len(EXTRACT_CASES), EXTRACT_MAX_TOKENS, "extract"), lambda s: s.extract, args.warm)
        run = f"{time.time_ns():x}"  # no earlier run's prompts
        for clients in args.prefill_clients:  # unique prompts of about 1,400 tokens: prefill alone
            for r in range(args.rounds):
                line = []
                for s in openai:
                    await settle()
                    tps, mean = await prefill(s.url, clients, {1: 3}.get(clients, 2 * clients), args.prefill_words,
                                              f"{run}-{clients}-{r}")
                    s.prefill.setdefault(clients, []).append(tps)
                    line.append(f"{s.name} {tps:6.1f}")
                print(f"{clients:>3} clients prefilling prompts of {mean:.0f} tokens, round {r + 1}: " + ", ".join(line)
                      + " prompt tok/s", flush=True)
        if args.long_words:
            for r in range(args.rounds):
                line = []
                for s in openai:
                    await settle()
                    tps, context = await long_decode(s.url, args.long_words, args.max_tokens)
                    s.long_decode.append(tps)
                    line.append(f"{s.name} {tps:6.1f}")
                print(f"  1 client decoding after {context} prompt tokens, round {r + 1}: " + ", ".join(line) + " tok/s",
                      flush=True)
        for r in range(args.ttft_rounds):
            for s in openai:
                await settle()
                s.ttft_ms.append(await first_token_ms(s.url, r))
        print()
        pairs = [(s, p) for s in ours for p in peers]
        print("| load | " + " | ".join(f"{s.name} (median)" for s in everyone) + " | "
              + " | ".join(f"{s.name} / {p.name}" for s, p in pairs) + " |")
        print("|---" * (len(everyone) + len(pairs) + 1) + "|")
        for clients in args.clients:
            print(table_row(f"{clients} clients, tok/s", everyone, pairs, results_at(clients)))
        if args.copy:
            print(table_row("1 client copying, tok/s", everyone, pairs, lambda s: s.copy))
        if args.extract:
            print(table_row("1 client extracting JSON (json_schema), tok/s", everyone, pairs, lambda s: s.extract))
        for clients in args.prefill_clients:
            print(table_row(f"prefill, {clients} clients, prompt tok/s", everyone, pairs, prefill_at(clients)))
        if args.long_words:
            print(table_row("1 client after a long prompt, tok/s", everyone, pairs, lambda s: s.long_decode))
        print()
        write_results(everyone, args)
        for s in ours:
            hit = await prefix_hit_rate(s.url)
            if hit is not None:
                print(f"{s.name}: prefix cache hit rate over the run {hit:.2f} (prompt tokens whose KV came from cached blocks)")
        for s in everyone:
            rss = rss_mb(s.pid)
            ttft = f"{statistics.median(s.ttft_ms):.0f} ms" if s.ttft_ms else "not measured" + (" (GraphQL)" if s.kind == "graphql" else "")
            print(f"{s.name}: time to first token at 1 client, median of {len(s.ttft_ms)}: {ttft}; resident memory after the loads: "
                  + (f"{rss:.0f} MB" if rss is not None else "unknown (no pid)"))
    finally:
        for s in ours:
            if s.process is not None:
                s.process.terminate()
                s.process.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__.split("\n")[0])
    parser.add_argument("--peer", action="append", default=[],
                        help="NAME=URL of an OpenAI-compatible server to compare with (repeatable; default llama.cpp on :8090)")
    parser.add_argument("--peer-pid-file", action="append", default=[], help="NAME=PATH: a peer's pid file (for its memory)")
    parser.add_argument("--serve", type=lambda s: [m for m in s.split(",") if m], default=["native", "exact"],
                        help="weights modes of our services to start here (comma-separated; '' for none)")
    parser.add_argument("--ours", action="append", default=[], help="NAME=URL of a running service of ours")
    parser.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",") if c], default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                        help="each server answers a load once, untimed, before its rounds (every prefix cache then holds its prompts)")
    parser.add_argument("--ttft-rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--chats-at-1", type=int, default=3)
    parser.add_argument("--copy", action=argparse.BooleanOptionalAction, default=True,
                        help="also a one-client load whose answers copy from their prompts")
    parser.add_argument("--copy-chats", type=int, default=len(COPY_TASKS),
                        help="chats a copying round: chat i is task i mod 4 on passage i mod 3 (12 covers every pair)")
    parser.add_argument("--extract", action=argparse.BooleanOptionalAction, default=True,
                        help="also a one-client load extracting JSON from texts, each with its schema as the response format")
    parser.add_argument("--graphql", action=argparse.BooleanOptionalAction, default=True,
                        help="also our GraphQL API (embedded native engine) on the chat, copying and extraction loads, through `chat`")
    parser.add_argument("--prefill-clients", type=lambda s: [int(c) for c in s.split(",") if c], default=[1, 8],
                        help="concurrencies of the prefill load (unique long prompts, one new token each); '' for none")
    parser.add_argument("--prefill-words", type=int, default=1230, help="words per prefill prompt (about 1,400 tokens)")
    parser.add_argument("--long-words", type=int, default=3550,
                        help="words of the long-context decode load's prompt (about 4,000 tokens); 0 for none")
    asyncio.run(main(parser.parse_args()))
