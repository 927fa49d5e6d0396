"""`python -m benchmarks.jobs` (`make bench-jobs`): batch jobs against the issue's targets, in one run.

Starts the GraphQL server (real model, SQLite jobs database in a temporary directory) as its own
process and drives it from this one:
1. throughput: the same N short prompts as ``chatBatched`` calls at full concurrency (enough
   calls of 64 at once to fill the engine's running and waiting places), then as one batch job
   (a JSONL upload), each from the first request to the last answer; target: job >= 0.9x;
2. interactive latency: time to first token of a ``chatStream`` (first ChatToken at the client),
   idle, under 56 ``chatBatched`` chats in flight (for comparison: the job's load, as chats), then while a 2,000-item job runs
   (median of a few each); target: <= 2x idle;
3. intake: submitting a 50,000-line JSONL file (the time of the mutation) and the server's peak
   resident memory meanwhile; target: <= 10 s, memory bounded (the file is streamed).
Prints each measure and its ratio; writes bench-results/jobs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

BATCH = """mutation($inputs: [ChatInput!]!) { chatBatched(inputs: $inputs) { succeeded } }"""
SUBMIT = "mutation($input: BatchJobInput!) { submitBatchJob(input: $input) { id status counts { total failed } } }"
GET = "query($id: ID!) { batchJob(id: $id) { status counts { total completed failed cancelled } } }"
CANCEL = "mutation($id: ID!) { cancelBatchJob(id: $id) { status } }"
STREAM = """subscription($input: ChatInput!) { chatStream(input: $input) { __typename } }"""
TOPICS = ["the sea", "a cat", "rain", "mountains", "coffee", "the moon", "a library", "trains", "autumn", "bees"]


def prompt(i: int) -> str:
    return f"Write one short sentence about {TOPICS[i % len(TOPICS)]} ({i})."


def jsonl(n: int, max_tokens: int, start: int = 0) -> bytes:
    return "".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
        "messages": [{"role": "user", "content": prompt(i)}], "max_tokens": max_tokens, "temperature": 0}}) + "\n"
        for i in range(start, start + n)).encode()


class Server:
    def __init__(self, data_dir: str, port: int, reserved_slots: int | None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PORT": str(port), "DATA_DIR": data_dir, "LOG_FORMAT": "json"}
        if reserved_slots is not None:
            env["JOB_RESERVED_SLOTS"] = str(reserved_slots)
        self.proc = subprocess.Popen([sys.executable, "-m", "graphql_api"], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)

    async def ready(self, client: httpx.AsyncClient) -> None:
        while True:
            assert self.proc.poll() is None, "the server exited"
            try:
                if (await client.get(f"{self.url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def gql(client: httpx.AsyncClient, url: str, query: str, variables: dict) -> dict:
    body = (await client.post(f"{url}/graphql", json={"query": query, "variables": variables})).json()
    assert "errors" not in body, body
    return body["data"]


async def submit_file(client: httpx.AsyncClient, url: str, content: bytes) -> dict:
    operations = {"query": SUBMIT, "variables": {"input": {"file": None}}}
    r = await client.post(f"{url}/graphql", data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.input.file"]})},
                          files={"0": ("batch.jsonl", content, "application/jsonl")})
    body = r.json()
    assert "errors" not in body, body
    return body["data"]["submitBatchJob"]


async def batched(client: httpx.AsyncClient, url: str, n: int, max_tokens: int, concurrency: int, size: int = 64) -> float:
    """Seconds to answer n prompts as chatBatched calls of ``size``, ``concurrency`` calls at a time."""
    chunks = [list(range(at, min(at + size, n))) for at in range(0, n, size)]

    async def worker() -> None:
        while chunks:
            ids = chunks.pop(0)
            inputs = [{"chatId": str(i), "userPrompt": prompt(i), "options": {"maxTokens": max_tokens}} for i in ids]
            data = await gql(client, url, BATCH, {"inputs": inputs})
            assert data["chatBatched"]["succeeded"] == len(ids), data

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def job_run(client: httpx.AsyncClient, url: str, n: int, max_tokens: int) -> float:
    started = time.perf_counter()
    job = await submit_file(client, url, jsonl(n, max_tokens))
    while True:
        state = (await gql(client, url, GET, {"id": job["id"]}))["batchJob"]
        if state["status"] == "COMPLETED":
            assert state["counts"]["completed"] == n, state
            return time.perf_counter() - started
        await asyncio.sleep(0.1)


async def ttft(url: str, i: int) -> float:
    async with connect(url.replace("http", "ws") + "/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        await ws.recv()
        started = time.perf_counter()
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": STREAM, "variables": {
            "input": {"chatId": f"i{i}", "userPrompt": "What is the capital of France?", "options": {"maxTokens": 8}}}}}))
        first = json.loads(await ws.recv())
        elapsed = time.perf_counter() - started
        assert first["payload"]["data"]["chatStream"]["__typename"] == "ChatToken", first
        while json.loads(await ws.recv())["type"] == "next":
            pass
        return elapsed * 1000


class PeakRss:
    def __init__(self, ps: psutil.Process) -> None:
        self.ps, self.peak, self._stop = ps, ps.memory_info().rss, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.ps.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()


async def main(args: argparse.Namespace) -> dict:
    results: dict = {"items": args.items, "max_tokens": args.max_tokens, "job_reserved_slots": args.reserved_slots}
    phases = set(args.phases.split(","))
    with tempfile.TemporaryDirectory() as data_dir:
        server = Server(data_dir, args.port, args.reserved_slots)
        try:
            async with httpx.AsyncClient(timeout=900) as client:
                await server.ready(client)
                await batched(client, server.url, 64, args.max_tokens, 1)  # warm-up
                if "throughput" in phases:
                    results["throughput"] = await throughput(client, server, args)
                if "ttft" in phases:
                    results["ttft"] = await latency(client, server, args)
                if "intake" in phases:
                    results["intake"] = await intake(client, server, args)
        finally:
            server.stop()
    return results


async def throughput(client: httpx.AsyncClient, server: Server, args: argparse.Namespace) -> dict:
    b = await batched(client, server.url, args.items, args.max_tokens, concurrency=5)
    j = await job_run(client, server.url, args.items, args.max_tokens)
    print(f"throughput: chatBatched {args.items / b:.1f} items/s, job {args.items / j:.1f} items/s: "
          f"job/chatBatched = {b / j:.2f}x (target >= 0.9x)", flush=True)
    return {"chatBatched_items_per_s": args.items / b, "job_items_per_s": args.items / j, "ratio": b / j}


async def latency(client: httpx.AsyncClient, server: Server, args: argparse.Namespace) -> dict:
    """Interactive time to first token, idle and under a 2,000-item job."""
    idle = [await ttft(server.url, i) for i in range(args.probes)]
    # The same load as the job's (56 chats in flight, the default MAX_RUNNING - JOB_RESERVED_SLOTS),
    # as chatBatched calls of 56 one after another: where the job's items are scheduled at BATCH.
    load = asyncio.ensure_future(batched(client, server.url, 56 * 40, args.max_tokens, concurrency=1, size=56))
    await asyncio.sleep(2.0)
    under_batched = [await ttft(server.url, 50 + i) for i in range(args.probes)]
    load.cancel()
    await asyncio.gather(load, return_exceptions=True)
    await asyncio.sleep(3.0)  # the cancelled chats leave the engine
    job = await submit_file(client, server.url, jsonl(2000, args.max_tokens, start=10_000))
    await asyncio.sleep(2.0)
    loaded = [await ttft(server.url, 100 + i) for i in range(args.probes)]
    state = (await gql(client, server.url, GET, {"id": job["id"]}))["batchJob"]
    await gql(client, server.url, CANCEL, {"id": job["id"]})
    ratio = statistics.median(loaded) / statistics.median(idle)
    print(f"time to first token: idle median {statistics.median(idle):.0f} ms, under a 2,000-item job "
          f"{statistics.median(loaded):.0f} ms: {ratio:.2f}x (target <= 2x); job had {state['counts']}; under full "
          f"56 chatBatched chats in flight {statistics.median(under_batched):.0f} ms "
          f"({statistics.median(under_batched) / statistics.median(idle):.2f}x)", flush=True)
    await asyncio.sleep(2.0)
    return {"idle_ms": idle, "under_job_ms": loaded, "under_chatBatched_ms": under_batched, "ratio_of_medians": ratio,
            "job_counts_at_end": state["counts"]}


async def intake(client: httpx.AsyncClient, server: Server, args: argparse.Namespace) -> dict:
    """Submitting a 50,000-line file, and the server's peak memory meanwhile."""
    content = jsonl(50_000, args.max_tokens, start=100_000)
    before = server.ps.memory_info().rss
    with PeakRss(server.ps) as rss:
        started = time.perf_counter()
        big = await submit_file(client, server.url, content)
        took = time.perf_counter() - started
    await gql(client, server.url, CANCEL, {"id": big["id"]})
    assert big["counts"]["total"] == 50_000 and big["counts"]["failed"] == 0, big
    print(f"intake: 50,000 lines ({len(content) / 2**20:.1f} MiB) submitted in {took:.1f} s (target <= 10 s); "
          f"server RSS {before / 2**20:.0f} MiB before, {rss.peak / 2**20:.0f} MiB peak", flush=True)
    return {"lines": 50_000, "bytes": len(content), "seconds": took, "rss_before_mb": before / 2**20,
            "rss_peak_mb": rss.peak / 2**20}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--port", type=int, default=8017)
    parser.add_argument("--reserved-slots", type=int, default=None, help="JOB_RESERVED_SLOTS of the server")
    parser.add_argument("--phases", default="throughput,ttft,intake")
    out = asyncio.run(main(parser.parse_args()))
    Path("bench-results").mkdir(exist_ok=True)
    Path(f"bench-results/jobs-{out['job_reserved_slots']}.json" if out["job_reserved_slots"] is not None
         else "bench-results/jobs.json").write_text(json.dumps(out, indent=2))
