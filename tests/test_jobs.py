"""Batch jobs: the API's shape, validation, pagination, cancel, expiry, retention and ownership,
over real HTTP with a deterministic fake engine (the model is not the point here; the jobs tests
with the real model are in test_jobs_model.py)."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from fakes import FakeEngine, FakeTicket
from jobs_client import CANCEL, GET, RESULTS, SUBMIT, JobsClient, line
from websockets.asyncio.client import connect

from graphql_api.app import create_app
from graphql_api.jobs import runner as runner_module
from graphql_api.jobs.intake import Checker
from graphql_api.settings import ApiSettings
from http_common.keys import new_key
from inference.boundary import BATCH, ChatRequest


class HeldTicket(FakeTicket):
    """Answers only once the engine lets it go; a cancelled wait is an abort."""

    def __init__(self, completion, gate: asyncio.Event, engine: HeldEngine) -> None:
        super().__init__(completion)
        self.gate = gate
        self.engine = engine

    async def result(self, timeout: float | None = None):
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.engine.aborted += 1
            raise
        return self.completion


class HeldEngine(FakeEngine):
    """The fake engine, with answers held until ``gate`` is set; records what it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.requests: list[ChatRequest] = []
        self.aborted = 0

    async def submit(self, requests):
        self.requests += requests
        tickets = await super().submit(requests)
        return [HeldTicket(t.completion, self.gate, self) if isinstance(t, FakeTicket) else t for t in tickets]


@pytest.fixture
async def jobs_app(tmp_path, serve):
    """An app over a fake engine whose answers are held until ``engine.gate`` is set."""

    async def make(engine=None, **settings):
        engine = engine or FakeEngine()
        app = create_app(ApiSettings(data_dir=tmp_path, **settings), engine=engine)
        url = await serve(app)
        return engine, url

    return make


def chat_item(chat_id: str, prompt: str = "Say hi.", **options) -> dict:
    return {"chatId": chat_id, "userPrompt": prompt, "options": options or {"maxTokens": 4}}


async def test_inline_job_runs_every_item_once_with_bad_ones_failed_and_pages_through_results(jobs_app):
    _engine, url = await jobs_app()
    client = JobsClient(url)
    items = [chat_item(f"c{i}", f"Count to {i}.") for i in range(12)]
    items[3] = chat_item("c3", "  ")  # blank prompt
    items[5] = chat_item("c5", "hi", maxTokens=5000)  # over the cap
    items.append(chat_item("c0"))  # a duplicate chatId
    job = await client.submit_items(items, metadata={"project": "demo", "n": 13})
    assert job["counts"]["total"] == 13 and job["metadata"] == {"project": "demo", "n": 13}
    done = await client.wait(job["id"], timeout=10)
    assert done["status"] == "COMPLETED" and done["counts"] == {"total": 13, "completed": 10, "failed": 3, "cancelled": 0}
    results = await client.results(job["id"], page=4)  # four pages
    assert [r["chatId"] for r in results] == [f"c{i}" for i in range(12)] + ["c0"]
    errors = {r["chatId"] + "/" + str(i): (r["code"], r["field"]) for i, r in enumerate(results) if r["__typename"] == "ChatError"}
    assert errors == {"c3/3": ("INVALID_INPUT", "userPrompt"), "c5/5": ("INVALID_INPUT", "options.maxTokens"),
                      "c0/12": ("DUPLICATE_CHAT_ID", "chatId")}
    assert results[0]["response"] == "echo: Count to 0."
    lines = await client.results_jsonl(job["id"])
    assert [x["custom_id"] for x in lines] == [r["chatId"] for r in results]
    assert lines[0]["response"]["status_code"] == 200 and lines[0]["error"] is None
    assert lines[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: Count to 0."
    assert lines[3]["response"] is None and lines[3]["error"]["code"] == "INVALID_INPUT"


async def test_jsonl_upload_names_each_bad_line_and_field(jobs_app):
    engine, url = await jobs_app(engine=HeldEngine())
    engine.gate.set()
    client = JobsClient(url)
    good = [line(f"t{i}", f"Label ticket {i}.") for i in range(4)]
    bad = ["{not json", json.dumps({"body": {"messages": [{"role": "user", "content": "x"}]}}),
           line("t9", "hi", max_tokens=0), line("t10", "hi", best_of=2), line("t0", "again"),
           json.dumps({"custom_id": "t11", "body": {"messages": []}})]
    content = ("\n".join(good[:2] + bad[:3] + ["", "   "] + good[2:] + bad[3:]) + "\n").encode()
    job = await client.submit_file(content)
    assert job["counts"]["total"] == 10 and job["status"] in ("QUEUED", "RUNNING", "COMPLETED")
    done = await client.wait(job["id"], timeout=10)
    assert done["counts"] == {"total": 10, "completed": 4, "failed": 6, "cancelled": 0}
    errors = {r["chatId"]: (r["field"], r["message"]) for r in await client.results(job["id"]) if r["__typename"] == "ChatError"}
    assert errors["line-3"][1].startswith("line 3: not valid JSON")
    assert errors["line-4"] == ("custom_id", "line 4: custom_id must be a non-blank string")
    assert errors["t9"] == ("body.max_tokens", "line 5: max_tokens must be between 1 and 1024, got 0")
    assert errors["t10"][0] == "body.best_of" and errors["t10"][1].startswith("line 10: best_of is not supported")
    assert errors["t0"][0] == "custom_id" and "more than once" in errors["t0"][1]
    assert errors["t11"][0] == "body.messages" and errors["t11"][1].startswith("line 12: messages")
    sent = [r.request_id for r in engine.requests]
    assert sorted(sent) == sorted(f"{job['id']}:t{i}" for i in range(4))
    assert {r.priority for r in engine.requests} == {BATCH}
    assert engine.requests[0].params.temperature == 0 and engine.requests[0].params.max_new_tokens == 4


def test_a_line_longer_than_the_limit_is_one_failed_item_and_its_bytes_are_not_kept():
    from graphql_api.jobs.intake import lines

    class Chunks:
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, size: int = -1) -> bytes:
            out, self.data = self.data[:size], self.data[size:]
            return out

    data = b'{"a": 1}\n' + b"x" * 300_000 + b"\n\n" + b'{"b": 2}'
    got = asyncio.run(_collect(lines(Chunks(data), 100_000)))
    assert got == [(1, b'{"a": 1}'), (2, None), (4, b'{"b": 2}')]
    checker = Checker(1024, 100, 8)
    refused = checker.line(3, b'{"custom_id": "123456789", "body": {}}').result
    assert refused is not None and refused.error is not None and refused.error.field == "custom_id"


# Rows as earlier versions stored them (the inference service's batch item JSON, nulls included in
# the cancelled one), and the output lines they gave: the store reads them, and writes alike.
OLD_ROWS = [
    r'''{"text":"a","finish_reason":"stop","usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9},"timings":{"queued_ms":1.0,'''
    r'''"total_ms":3.5},"logprobs":{"content":[{"token":"a","logprob":-0.5,"bytes":[97],"top_logprobs":[{"token":"a","logprob":-0.5,'''
    r'''"bytes":[97]},{"token":"é","logprob":-1.0,"bytes":[195,169]}]}]},"choices":[{"index":0,"message":{"role":"assistant",'''
    r'''"content":"a"},"finish_reason":"stop","logprobs":{"content":[{"token":"a","logprob":-0.5,"bytes":[97],"top_logprobs":[{"token":"a",'''
    r'''"logprob":-0.5,"bytes":[97]},{"token":"é","logprob":-1.0,"bytes":[195,169]}]}]}},{"index":1,"message":{"role":"assistant",'''
    r'''"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\": 1}"}}]},"finish_reason":"tool_calls"}]}''',
    r'''{"text":null,"finish_reason":null,"usage":null,"timings":null,"error":{"message":"the job was cancelled before this item ended",'''
    r'''"type":"server_error","param":null,"code":"CANCELLED","field":null},"logprobs":null,"choices":null,"tool_calls":null}''',
]
OLD_LINES = [
    r'''{"id": "batch_req_batch_1-3", "custom_id": "c", "response": {"status_code": 200, "request_id": "batch_1-3", "body": {"id": "batch_1-3", '''
    r'''"object": "chat.completion", "created": 0, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "a"}, '''
    r'''"finish_reason": "stop", "logprobs": {"content": [{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": [{"token": "a", '''
    r'''"logprob": -0.5, "bytes": [97]}, {"token": "é", "logprob": -1.0, "bytes": [195, 169]}]}]}}, {"index": 1, "message": {"role": '''
    r'''"assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}, '''
    r'''"finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}}}, "error": null}''' "\n",
    r'''{"id": "batch_req_batch_1-3", "custom_id": "c", "response": null, "error": {"code": "CANCELLED", "message": "the job was '''
    r'''cancelled before this item ended", "param": null}}''' "\n",
]


def test_rows_stored_by_earlier_versions_load_and_give_the_same_output_lines():
    from graphql_api.jobs.outcome import ItemOutcome
    from graphql_api.jobs.output import output_line
    from graphql_api.jobs.store import ItemResult
    from graphql_api.jobs.tables import ItemStatus

    undated = lambda text: re.sub(r'"created": \d+', '"created": 0', text)
    for row, want in zip(OLD_ROWS, OLD_LINES, strict=True):
        for outcome in (ItemOutcome.load(row), ItemOutcome.load(ItemOutcome.load(row).dump())):  # as read, and as written again
            assert undated(output_line("batch_1", ItemResult(3, "c", ItemStatus.COMPLETED, outcome), "m")) == want


async def _collect(iterator) -> list:
    return [x async for x in iterator]


async def test_wrong_ids_cursors_and_inputs_are_clear_errors(jobs_app):
    _engine, url = await jobs_app(max_job_items=3)
    client = JobsClient(url)
    body = await client.gql(GET, {"id": "batch_nope"})
    assert body["errors"][0]["extensions"]["code"] == "JOB_NOT_FOUND" and "batch_nope" in body["errors"][0]["message"]
    body = await client.gql(CANCEL, {"id": "batch_nope"})
    assert body["errors"][0]["extensions"]["code"] == "JOB_NOT_FOUND"
    body = await client.gql(SUBMIT, {"input": {"items": [chat_item(f"x{i}") for i in range(4)]}})
    assert body["errors"][0]["extensions"] == {"code": "JOB_TOO_LARGE", "limit": 3, "size": 4}
    body = await client.gql(SUBMIT, {"input": {}})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT" and "either items or file" in body["errors"][0]["message"]
    big = await client.submit_file(("\n".join(line(f"l{i}", "hi") for i in range(5))).encode())
    assert big["status"] == "FAILED" and "MAX_JOB_ITEMS" in big["error"] and big["counts"]["total"] == 0
    job = await client.submit_items([chat_item("a")])
    body = await client.gql(RESULTS, {"id": job["id"], "first": 0})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT" and "first must be between 1 and 1000" in body["errors"][0]["message"]
    body = await client.gql(RESULTS, {"id": job["id"], "first": 5, "after": "garbage"})
    assert body["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{url}/jobs/batch_nope/results.jsonl")).status_code == 404


async def test_batch_jobs_lists_the_callers_jobs_newest_first_in_pages(jobs_app):
    _engine, url = await jobs_app()
    client = JobsClient(url)
    ids = [(await client.submit_items([chat_item(f"j{i}")]))["id"] for i in range(5)]
    query = "query($after: String) { batchJobs(first: 2, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }"
    seen, after = [], None
    while True:
        page = (await client.ok(query, {"after": after}))["batchJobs"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ids[::-1]


async def test_cancel_mid_job_keeps_what_ended_aborts_what_runs_and_cancels_the_rest(jobs_app):
    engine = HeldEngine()
    engine, url = await jobs_app(engine=engine, job_reserved_slots=60)  # 4 in flight at most
    client = JobsClient(url)
    job = await client.submit_items([chat_item(f"c{i}") for i in range(10)])
    await client.wait(job["id"], timeout=10, until=lambda j: j["status"] == "RUNNING")
    for _ in range(100):
        if len(engine.requests) == 4:
            break
        await asyncio.sleep(0.02)
    assert len(engine.requests) == 4  # the runner keeps MAX_RUNNING - JOB_RESERVED_SLOTS in flight
    cancelled = (await client.ok(CANCEL, {"id": job["id"]}))["cancelBatchJob"]
    assert cancelled["status"] in ("CANCELLING", "CANCELLED") and cancelled["counts"]["cancelled"] >= 6
    done = await client.wait(job["id"], timeout=10)
    assert done["status"] == "CANCELLED" and done["counts"] == {"total": 10, "completed": 0, "failed": 0, "cancelled": 10}
    assert engine.aborted == 4 and len(engine.requests) == 4
    results = await client.results(job["id"])
    assert len(results) == 10 and {r["code"] for r in results} == {"CANCELLED"}


async def test_a_job_past_its_window_expires_keeping_what_finished_and_is_deleted_after_retention(jobs_app, monkeypatch):
    monkeypatch.setattr(runner_module, "SWEEP_S", 0.2)
    engine = HeldEngine()
    engine, url = await jobs_app(engine=engine, job_reserved_slots=62, job_completion_window="1s", job_retention="2s")
    client = JobsClient(url)
    job = await client.submit_items([chat_item(f"c{i}") for i in range(6)])
    await client.wait(job["id"], timeout=10, until=lambda j: j["status"] == "RUNNING")
    # Expired at once; its two running items are aborted by the runner within CHECK_S.
    done = await client.wait(job["id"], timeout=10, until=lambda j: j["counts"]["cancelled"] == 6)
    assert done["status"] == "EXPIRED" and done["counts"] == {"total": 6, "completed": 0, "failed": 0, "cancelled": 6}
    results = await client.results(job["id"])
    assert {r["code"] for r in results} == {"TIMEOUT"} and "completion window" in results[0]["message"]
    assert engine.aborted == 2
    for _ in range(60):
        body = await client.gql(GET, {"id": job["id"]})
        if "errors" in body:
            break
        await asyncio.sleep(0.1)
    assert body["errors"][0]["extensions"]["code"] == "JOB_NOT_FOUND"  # deleted past JOB_RETENTION


async def test_a_job_belongs_to_its_key(jobs_app, tmp_path):
    (alice_key, alice_line), (bob_key, bob_line) = new_key("alice"), new_key("bob")
    (tmp_path / "keys").write_text(f"{alice_line}\n{bob_line}\n")
    _engine, url = await jobs_app(api_keys_file=str(tmp_path / "keys"))
    alice = JobsClient(url, {"authorization": f"Bearer {alice_key}"})
    bob = JobsClient(url, {"authorization": f"Bearer {bob_key}"})
    job = await alice.submit_items([chat_item("a1")])
    assert (await alice.wait(job["id"], timeout=10))["status"] == "COMPLETED"
    for query in (GET, CANCEL):
        body = await bob.gql(query, {"id": job["id"]})
        assert body["errors"][0]["extensions"]["code"] == "JOB_NOT_FOUND", body
    assert (await bob.ok("{ batchJobs { edges { node { id } } } }", {}))["batchJobs"]["edges"] == []
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{url}/jobs/{job['id']}/results.jsonl", headers=bob.headers)).status_code == 404
        assert (await http.get(f"{url}/jobs/{job['id']}/results.jsonl")).status_code == 401
    assert len(await alice.results_jsonl(job["id"])) == 1


async def test_batch_job_progress_streams_counts_as_they_change_until_the_job_is_final(jobs_app):
    engine, url = await jobs_app(engine=HeldEngine(), job_reserved_slots=63)  # one item at a time
    client = JobsClient(url)
    job = await client.submit_items([chat_item(f"c{i}") for i in range(3)])
    query = "subscription($id: ID!) { batchJobProgress(id: $id) { status counts { completed } } }"
    seen = []
    async with connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "p", "type": "subscribe", "payload": {"query": query, "variables": {"id": job["id"]}}}))
        first = json.loads(await ws.recv())
        seen.append(first["payload"]["data"]["batchJobProgress"])
        engine.gate.set()
        while (msg := json.loads(await ws.recv()))["type"] == "next":
            seen.append(msg["payload"]["data"]["batchJobProgress"])
        assert msg == {"id": "p", "type": "complete"}
    assert seen[0]["counts"]["completed"] == 0 and seen[-1] == {"status": "COMPLETED", "counts": {"completed": 3}}
    completed = [s["counts"]["completed"] for s in seen]
    assert completed == sorted(completed) and len(set(map(json.dumps, seen))) == len(seen)  # only changes are sent


async def test_two_jobs_share_the_runners_places_instead_of_one_waiting_for_the_other(jobs_app):
    engine, url = await jobs_app(engine=HeldEngine(), job_reserved_slots=60)  # 4 in flight at most
    client = JobsClient(url)
    first = await client.submit_items([chat_item(f"a{i}") for i in range(12)])
    second = await client.submit_items([chat_item(f"b{i}") for i in range(12)])
    engine.gate.set()
    for job in (first, second):
        assert (await client.wait(job["id"], timeout=10))["status"] == "COMPLETED"
    order = [r.request_id.split(":")[0] for r in engine.requests]
    assert len(order) == 24
    # The second job starts long before the first ends (one after the other, the first would end at 11).
    assert order.index(second["id"]) <= 6 and len(order) - 1 - order[::-1].index(first["id"]) >= 14, [o[-2:] for o in order]


async def test_a_jobs_items_count_against_its_keys_quota_and_a_spent_quota_makes_it_wait_not_fail(jobs_app, tmp_path):
    key, key_line = new_key("carol")
    (tmp_path / "keys").write_text(f"{key_line}:rpm=3\n")
    _, url = await jobs_app(api_keys_file=str(tmp_path / "keys"))
    carol = JobsClient(url, {"authorization": f"Bearer {key}"})
    job = await carol.submit_items([chat_item(f"q{i}") for i in range(5)])
    ran = await carol.wait(job["id"], timeout=10, until=lambda j: j["counts"]["completed"] == 3)
    await asyncio.sleep(1.0)  # the runner keeps trying; the quota keeps refusing until its minute ends
    later = await carol.job(job["id"])
    assert ran["status"] == later["status"] == "RUNNING" and later["counts"] == {"total": 5, "completed": 3, "failed": 0, "cancelled": 0}
    viewer = await carol.ok("{ viewer { usage { requestsThisMinute } } }", {})
    assert viewer["viewer"]["usage"]["requestsThisMinute"] == 3
    assert (await carol.ok(CANCEL, {"id": job["id"]}))["cancelBatchJob"]["status"] == "CANCELLED"
