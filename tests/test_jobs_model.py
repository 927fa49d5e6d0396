"""Batch jobs with the real model: 200 prompts inline and as a JSONL upload; a server killed with
SIGKILL mid-job and restarted (nothing lost, nothing run twice)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from jobs_client import JobsClient, line
from test_operations import free_port

from graphql_api.app import create_app
from graphql_api.settings import ApiSettings

N_GOOD = 195
READY_TIMEOUT_S = 120.0


def bad_lines() -> list[str]:
    return ["{oops", '{"custom_id": "b-no-body"}', line("b-zero", "hi", max_tokens=0),
            line("b-temp", "hi", temperature=9), '{"custom_id": "b-blank", "body": {"messages": [{"role": "user", "content": " "}]}}']


def assert_each_once(results: list[dict], good: list[str], bad: list[str]) -> None:
    ids = Counter(r["chatId"] for r in results)
    assert set(ids) == set(good) | set(bad) and max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]
    by_id = {r["chatId"]: r for r in results}
    assert all(by_id[i]["__typename"] == "ChatSuccess" and by_id[i]["response"] for i in good)
    assert all(by_id[i]["__typename"] == "ChatError" and by_id[i]["code"] == "INVALID_INPUT" for i in bad)


@pytest.mark.parametrize("source", ["items", "file"])
async def test_200_prompts_with_5_bad_ones_give_195_answers_and_5_errors_each_custom_id_once(source, engine, serve, tmp_path):
    app = create_app(ApiSettings(data_dir=tmp_path), engine=engine)
    client = JobsClient(await serve(app))
    good = [f"p{i}" for i in range(N_GOOD)]
    if source == "items":
        items = [{"chatId": c, "userPrompt": f"Say the number {i}.", "options": {"maxTokens": 2}} for i, c in enumerate(good)]
        items[40:40] = [{"chatId": "b-blank", "userPrompt": " "}, {"chatId": "b-zero", "userPrompt": "hi", "options": {"maxTokens": 0}},
                        {"chatId": "b-temp", "userPrompt": "hi", "options": {"temperature": 9}},
                        {"chatId": "", "userPrompt": "hi"}, {"chatId": "b-long", "userPrompt": "x" * 40_000}]
        bad = ["b-blank", "b-zero", "b-temp", "", "b-long"]
        job = await client.submit_items(items)
    else:
        lines = [line(c, f"Say the number {i}.", max_tokens=2) for i, c in enumerate(good)]
        lines[100:100] = bad_lines()
        bad = ["line-101", "b-no-body", "b-zero", "b-temp", "b-blank"]
        job = await client.submit_file(("\n".join(lines) + "\n").encode())
    assert job["counts"] == {"total": 200, "completed": 0, "failed": 5, "cancelled": 0}
    done = await client.wait(job["id"], timeout=300)
    assert done["status"] == "COMPLETED" and done["counts"] == {"total": 200, "completed": 195, "failed": 5, "cancelled": 0}
    assert done["usage"]["completionTokens"] > N_GOOD
    results = await client.results(job["id"], page=1000)
    assert_each_once(results, good, bad)
    assert app.state.api.jobs.runner.submitted == N_GOOD  # one engine request per runnable item
    jsonl = await client.results_jsonl(job["id"])
    assert sorted(x["custom_id"] for x in jsonl) == sorted(good + bad)
    assert sum(x["error"] is None for x in jsonl) == N_GOOD


class Server:
    """``python -m graphql_api`` with the real model, on a free port, over the given data directory."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "PORT": self.url.rsplit(":", 1)[1], "DATA_DIR": str(data_dir), "LOG_FORMAT": "json"}
        with open(log, "a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "graphql_api"], env=env, stdout=out, stderr=subprocess.STDOUT)
        self.log = log

    async def ready(self) -> None:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT_S
        async with httpx.AsyncClient() as client:
            while True:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    if (await client.get(f"{self.url}/readyz", timeout=5)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, self.log.read_text()[-3000:]
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def engine_requests(metrics: str) -> int:
    """Requests the engine ended (``smollm_request_success_total``, every reason)."""
    return int(sum(float(v) for v in re.findall(r'^smollm_request_success_total\{[^}]*\} (\S+)$', metrics, re.M)))


@pytest.mark.model  # two server processes with the real model, one after the other
async def test_kill_9_mid_job_then_restart_completes_it_without_losing_or_repeating_an_item(tmp_path):
    good = [f"k{i}" for i in range(80)]
    content = ("\n".join([line(c, f"Write one word about the number {i}.", max_tokens=4) for i, c in enumerate(good)]
                         + ['{"custom_id": "k-bad"}']) + "\n").encode()
    first = Server(tmp_path, tmp_path / "server.log")
    try:
        await first.ready()
        client = JobsClient(first.url)
        job = await client.submit_file(content)
        mid = await client.wait(job["id"], timeout=120, until=lambda j: j["counts"]["completed"] > 0)
        first.kill()
    finally:
        first.kill()
    assert mid["status"] == "RUNNING"
    with sqlite3.connect(tmp_path / "jobs.db") as db:  # what the killed process had committed
        ran_before = db.execute("SELECT count(*) FROM batch_items WHERE status = 'completed'").fetchone()[0]
        left_running = db.execute("SELECT count(*) FROM batch_items WHERE status = 'running'").fetchone()[0]
    assert 0 < ran_before < len(good) and left_running > 0, (ran_before, left_running)

    second = Server(tmp_path, tmp_path / "server.log")
    try:
        await second.ready()
        client = JobsClient(second.url)
        done = await client.wait(job["id"], timeout=240)
        assert done["status"] == "COMPLETED" and done["counts"] == {"total": 81, "completed": 80, "failed": 1, "cancelled": 0}
        results = await client.results(job["id"], page=1000)
        assert_each_once(results, good, ["k-bad"])
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{second.url}/metrics")).text
        assert engine_requests(metrics) == len(good) - ran_before  # finished items were not run again
        assert len(await client.results_jsonl(job["id"])) == 81
    finally:
        second.kill()
