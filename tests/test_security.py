"""A hostile client's findings on keys, jobs, quotas and protocols, each kept as a regression test.

The deterministic fake engine where the model is not the point (keys, the jobs database, quotas,
headers, protocol errors); the real model for the response-format finding, where it is."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from conftest import start_server
from fakes import FakeEngine
from jobs_client import CANCEL, GET, RESULTS, SUBMIT, JobsClient, line
from test_api_http import CHAT, STREAM, post
from test_keys import Keys
from websockets.asyncio.client import connect

from graphql_api.app import create_app
from graphql_api.jobs.store import JobStore
from graphql_api.jobs.tables import ItemStatus, JobStatus
from graphql_api.settings import ApiSettings
from inference.boundary import ChatMessage, ChatRequest, InvalidFormat, ResponseFormat, SamplingParams

VIEWER_USAGE = "{ viewer { name usage { tokensThisMinute } } }"
LIST_RESULTS = "{ batchJobs(first: 100) { edges { node { id results(first: 1000) { edges { cursor } } } } } }"
LONG_PROMPT = " ".join(f"word{i}" for i in range(80))  # the fake engine echoes it back a word a delta


def chat_item(chat_id: str, prompt: str = "Say hi.") -> dict:
    return {"chatId": chat_id, "userPrompt": prompt, "options": {"maxTokens": 4}}


@pytest.fixture
def keys(tmp_path) -> Keys:
    return Keys(tmp_path / "keys", {"alice": "", "bob": "", "carol": "tpm=5000", "dave": "rpm=3"})


@pytest.fixture
async def keyed_fake(tmp_path, serve, keys):
    async def make(engine=None, **settings):
        engine = engine or FakeEngine()
        app = create_app(ApiSettings(api_keys_file=keys.path, data_dir=tmp_path, **settings), engine=engine)
        return engine, app, await serve(app)

    return make


def rewrite_keys(path: str, edit) -> None:
    """The keys file with each line passed through ``edit`` (None drops it), as an operator edits it."""
    lines = [edit(ln) for ln in Path(path).read_text().splitlines()]
    Path(path).write_text("\n".join(ln for ln in lines if ln is not None) + "\n")


async def raw_request(url: str, head: bytes, body_chunks=(), read: bool = True) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        for chunk in body_chunks:
            writer.write(chunk)
            await writer.drain()
        return await asyncio.wait_for(reader.read(), 10) if read else b""
    except (ConnectionResetError, BrokenPipeError):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""
    finally:
        writer.close()


# --- 1. API keys: no request runs without a valid key, whatever its encoding or Accept --------------

@pytest.mark.parametrize("query_string, accept", [
    ("%71uery={viewer{name}}", "text/html"),
    ("%71uery=%7Bviewer%7Bname%7D%7D", "text/html"),
    ("qu%65ry={viewer{name}}", "*/*"),
    ("query={viewer{name}}", "text/html"),
    ("x=1&%71uery={viewer{name}}", "text/html, application/json"),
])
async def test_a_get_whose_query_is_percent_encoded_needs_a_key(keyed_fake, query_string, accept):
    _engine, _app, url = await keyed_fake()
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/graphql?{query_string}", headers={"accept": accept})
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED" and "anonymous" not in r.text


async def test_a_stream_with_an_html_accept_and_an_encoded_query_needs_a_key(keyed_fake):
    engine, _app, url = await keyed_fake()
    document = 'subscription { chatStream(input: {chatId: "s", userPrompt: "hi"}) { __typename } }'
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{url}/graphql", params={"qu\u0065ry": document},
                             headers={"accept": "text/html, text/event-stream"})
        encoded = await client.get(f"{url}/graphql?%71uery={httpx.QueryParams({'q': document})['q']}",
                                   headers={"accept": "text/html, text/event-stream"})
        page = await client.get(f"{url}/graphql", headers={"accept": "text/html"})
    assert r.status_code == 401 and encoded.status_code == 401, (r.text, encoded.text)
    assert engine.batch_calls == [] and engine.open_streams == 0
    assert page.status_code == 200 and "graphiql" in page.text.lower()  # the IDE page itself stays open


# --- 2. the jobs database: no client can lock it for everybody -------------------------------------

async def _stored_job(url: str, headers: dict, items: int) -> str:
    client = JobsClient(url, headers)
    job = await client.submit_file("\n".join(line(f"r{i}", "hi") for i in range(items)).encode())
    await client.wait(job["id"])
    return job["id"]


async def test_dropped_and_concurrent_reads_never_lock_the_jobs_database(keyed_fake, keys):
    _engine, _app, url = await keyed_fake()
    await _stored_job(url, keys.headers("alice"), 1000)
    body = {"query": LIST_RESULTS}

    async def dropped() -> None:
        try:
            async with httpx.AsyncClient(timeout=0.3) as client:
                await client.post(f"{url}/graphql", json=body, headers=keys.headers("alice"))
        except httpx.TimeoutException:
            pass

    await asyncio.gather(*(dropped() for _ in range(48)))
    aliased = "{ " + " ".join(f"a{i}: batchJobs(first: 100) {{ edges {{ node {{ results(first: 1000) {{ edges {{ cursor }} }} }} }} }}"
                              for i in range(20)) + " }"
    async with httpx.AsyncClient(timeout=60) as client:
        two = await asyncio.gather(*(client.post(f"{url}/graphql", json={"query": aliased}, headers=keys.headers("alice"))
                                     for _ in range(2)))
        assert all("errors" not in r.json() for r in two), two[0].text[:300]
        started = time.monotonic()
        other = JobsClient(url, keys.headers("bob"))
        job = await other.submit_items([chat_item("after")])
        final = await other.wait(job["id"], timeout=10)
    assert final["status"] == "COMPLETED" and time.monotonic() - started < 5


async def _store_with_items(tmp_path, n: int) -> tuple[JobStore, str]:
    from graphql_api.jobs.outcome import ItemOutcome
    from graphql_api.jobs.store import NewItem, database_url

    store = JobStore(database_url("", tmp_path))
    await store.start()
    job_id = await store.create("o", None, 60)
    await store.add(job_id, 0, [NewItem(f"c{i}", None, ItemOutcome()) for i in range(n)])
    return store, job_id


async def test_reads_take_no_write_lock(tmp_path):
    store, job_id = await _store_with_items(tmp_path, 10)
    holder = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        async with asyncio.timeout(2):
            assert (await store.job(job_id)) is not None
            assert len(await store.results(job_id, 100)) == 10
            assert await store.jobs("o", 10, None)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await store.close()


async def test_reads_cancelled_at_any_point_leave_the_store_writable(tmp_path):
    store, job_id = await _store_with_items(tmp_path, 3000)
    rng = random.Random(13)
    try:
        for _ in range(30):
            reads = [asyncio.ensure_future(store.results(job_id, 1000)) for _ in range(20)]
            reads += [asyncio.ensure_future(store.job(job_id)) for _ in range(10)]
            await asyncio.sleep(rng.choice([0, 0.0005, 0.002, 0.01, 0.03]))
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
            async with asyncio.timeout(3):
                await store.create("o", None, 60)
    finally:
        await store.close()


async def test_random_cancellation_of_job_operations_never_locks_the_store_or_breaks_counts(tmp_path):
    """A property over random schedules: operations (submit, cancel, reads, claims, records)
    cancelled at random points leave the store writable at once and every job's counts equal
    to its items'."""
    from graphql_api.jobs.intake import Checker, file_items
    from graphql_api.jobs.service import Jobs

    class Upload:
        def __init__(self, data: bytes) -> None:
            self.data = data

        async def read(self, size: int = -1) -> bytes:
            chunk, self.data = self.data[:size], self.data[size:]
            await asyncio.sleep(0)
            return chunk

    settings = ApiSettings(data_dir=tmp_path)
    jobs = Jobs(settings, FakeEngine())
    store = jobs.store
    await store.start()
    rng = random.Random(29)
    try:
        ids: list[str] = []

        async def submit() -> None:
            n = rng.choice([1, 5, 300, 2500])
            lines = "\n".join(line(f"x{i}", "hi") if rng.random() > 0.1 else "not json" for i in range(n)).encode()
            checker = Checker(1024, 32_000, 128)
            job = await jobs.submit("owner", file_items(Upload(lines), checker, 1_000_000), None)
            ids.append(job.id)

        async def cancel() -> None:
            if ids:
                await jobs.cancel(rng.choice(ids), "owner")

        async def read() -> None:
            if ids:
                await store.results(rng.choice(ids), 1000)
                await store.jobs("owner", 100, None)

        async def work() -> None:
            claimed = await store.claim("w", 50, 30.0)
            from graphql_api.jobs.outcome import ItemOutcome
            from graphql_api.jobs.store import Finished
            await store.record("w", [Finished(c.item_id, c.job_id, ItemStatus.COMPLETED, ItemOutcome()) for c in claimed])

        for _ in range(60):
            ops = [asyncio.ensure_future(rng.choice([submit, cancel, read, work])()) for _ in range(rng.randint(1, 6))]
            await asyncio.sleep(rng.choice([0, 0.001, 0.005, 0.02, 0.05]))
            for op in ops:
                if rng.random() < 0.6:
                    op.cancel()
            outcomes = await asyncio.gather(*ops, return_exceptions=True)
            assert not [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)]
        for _ in range(200):  # the queue drains: nothing is left locked or claimable by nobody
            if not await store.claim("w", 500, 30.0):
                break
            await work()
        async with asyncio.timeout(2):  # a write goes through at once: no connection holds the lock
            await store.create("owner", None, 60)
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "jobs.db")
    for job_id, status, total, completed, failed, cancelled in db.execute(
            "SELECT id, status, total, completed, failed, cancelled FROM batch_jobs"):
        by_status = dict(db.execute("SELECT status, count(*) FROM batch_items WHERE job_id = ? GROUP BY status", (job_id,)).fetchall())
        if status == JobStatus.FAILED.value:
            assert total == completed == failed == cancelled == 0 and not by_status
            continue
        if status == JobStatus.VALIDATING.value:
            continue  # a submit cancelled mid-read: refused, or still to be refused, as a whole
        assert (by_status.get("completed", 0), by_status.get("failed", 0), by_status.get("cancelled", 0)) == \
            (completed, failed, cancelled), (job_id, status, by_status)
        assert sum(by_status.values()) == total, (job_id, status, by_status, total)
        if JobStatus(status).final:
            assert completed + failed + cancelled == total and not by_status.get("queued") and not by_status.get("running")


# --- 3. streams pay for what they generated ---------------------------------------------------------

async def test_streams_cancelled_midway_are_charged_the_tokens_they_streamed(keyed_fake, keys):
    _engine, _app, url = await keyed_fake()
    stream = {"query": STREAM, "variables": {"input": {"chatId": "s", "userPrompt": LONG_PROMPT, "options": {"maxTokens": 200}}}}
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(2):  # SSE: the socket reset after 40 tokens
            async with client.stream("POST", f"{url}/graphql", json=stream,
                                     headers={**keys.headers("carol"), "accept": "text/event-stream"}) as r:
                seen = 0
                async for chunk in r.aiter_text():
                    seen += chunk.count('"ChatToken"')
                    if seen >= 40:
                        break
    async with connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": keys.headers("carol")["authorization"]}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": stream}))
        for _ in range(40):
            assert json.loads(await ws.recv())["type"] == "next"
        await ws.send(json.dumps({"type": "complete", "id": "1"}))
    await asyncio.sleep(0.3)
    used = (await post(type("L", (), {"url": url}), VIEWER_USAGE, headers=keys.headers("carol"))).json()
    assert used["data"]["viewer"]["usage"]["tokensThisMinute"] >= 3 * 40, used


# --- 4. a job whose key is gone does not run ---------------------------------------------------------

class Stalled(FakeEngine):
    """An engine that never has room: items stay queued."""

    @property
    def running(self) -> bool:
        return False


async def test_a_revoked_keys_queued_job_is_cancelled_not_run_after_a_restart(tmp_path, keys):
    settings = dict(api_keys_file=keys.path, data_dir=tmp_path)
    app = create_app(ApiSettings(**settings), engine=Stalled())
    server, task, url = await start_server(app)
    job = await JobsClient(url, keys.headers("dave")).submit_items([chat_item(f"q{i}") for i in range(12)])
    server.should_exit = True
    await task
    rewrite_keys(keys.path, lambda ln: None if ln.startswith("dave:") else ln)
    engine = FakeEngine()
    app = create_app(ApiSettings(**settings), engine=engine)
    server, task, url = await start_server(app)
    try:
        for _ in range(100):
            status = app.state.api.jobs.store and (await app.state.api.jobs.store.job(job["id"]))
            if status is not None and status.status.final:
                break
            await asyncio.sleep(0.1)
        assert status is not None and status.status is JobStatus.CANCELLED, status
        assert status.cancelled == 12 and status.completed == 0 and "revoked" in (status.error or "")
        assert engine.batch_calls == []  # not one item reached the engine
    finally:
        server.should_exit = True
        await task


async def test_a_key_taken_out_of_the_file_is_refused_from_the_next_request_and_its_stream_ends(keyed_fake, keys):
    _engine, _app, url = await keyed_fake()
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.post(f"{url}/graphql", json={"query": VIEWER_USAGE}, headers=keys.headers("bob"))).status_code == 200
        async with connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": keys.headers("bob")["authorization"]}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            stream = {"query": STREAM, "variables": {"input": {"chatId": "s", "userPrompt": LONG_PROMPT}}}
            await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": stream}))
            assert json.loads(await ws.recv())["type"] == "next"
            rewrite_keys(keys.path, lambda ln: None if ln.startswith("bob:") else ln)
            r = await client.post(f"{url}/graphql", json={"query": VIEWER_USAGE}, headers=keys.headers("bob"))
            assert r.status_code == 401
            messages = []
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                messages.append(message)
                if message["type"] in ("error", "complete") or message.get("payload", {}).get("errors"):
                    break
            assert "UNAUTHENTICATED" in json.dumps(messages[-1]), messages[-3:]
            assert len(messages) < 70  # ended early, not streamed to its end
        assert (await client.post(f"{url}/graphql", json={"query": VIEWER_USAGE}, headers=keys.headers("alice"))).status_code == 200


async def test_a_key_past_its_expiry_is_refused(keyed_fake, keys):
    rewrite_keys(keys.path, lambda ln: ln + ":expires=2020-01-01" if ln.startswith("alice:") else ln)
    _engine, _app, url = await keyed_fake()
    async with httpx.AsyncClient() as client:
        assert (await client.post(f"{url}/graphql", json={"query": VIEWER_USAGE}, headers=keys.headers("alice"))).status_code == 401
        assert (await client.post(f"{url}/graphql", json={"query": VIEWER_USAGE}, headers=keys.headers("bob"))).status_code == 200


# --- 5. request heads are bounded -------------------------------------------------------------------

async def test_a_huge_header_gets_431_and_the_server_stays_responsive(serve):
    url = await serve(create_app(ApiSettings(), engine=FakeEngine()))
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    answer = await raw_request(url, head, [b"a" * 65536] * 128)  # 8 MiB
    assert answer.startswith(b"HTTP/1.1 431") and b"HEADERS_TOO_LARGE" in answer, answer[:200]

    async def flood() -> None:  # 128 MiB offered, a chunk at a time
        await raw_request(url, head, (b"a" * (1 << 20) for _ in range(128)))

    flooding = asyncio.ensure_future(flood())
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        assert (await client.get(f"{url}/healthz")).status_code == 200
        assert time.monotonic() - started < 1.0
    await flooding
    long_url = await raw_request(url, b"GET /healthz?" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert long_url.startswith(b"HTTP/1.1 431")
    normal = await raw_request(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 8000 + b"\r\nConnection: close\r\n\r\n")
    assert normal.startswith(b"HTTP/1.1 200")


# --- 6. typed errors, never INTERNAL --------------------------------------------------------------

async def test_hostile_jsonl_lines_are_failed_items_and_the_rest_run(keyed_fake, keys):
    _engine, _app, url = await keyed_fake()
    client = JobsClient(url, keys.headers("alice"))
    deep = b'{"custom_id": "deep", "body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    body_deep = b'{"custom_id": "deep2", "body": {"messages": ' + b"[" * 900 + b"]" * 900 + b"}}"
    surrogate = b'{"custom_id": "id\\ud800", "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}}'
    content = b"\n".join([line("ok1", "hi").encode(), deep, body_deep, surrogate, line("ok2", "hi").encode()])
    job = await client.submit_file(content)
    final = await client.wait(job["id"])
    assert final["status"] == "COMPLETED" and final["counts"] == {"total": 5, "completed": 2, "failed": 3, "cancelled": 0}
    results = {r["chatId"]: r for r in await client.results(job["id"])}
    assert results["line-2"]["code"] == "INVALID_INPUT" and "deep" in results["line-2"]["message"]
    assert results["deep2"]["code"] == "INVALID_INPUT" and results["deep2"]["field"] == "body"
    assert results["line-4"]["code"] == "INVALID_INPUT" and results["line-4"]["field"] == "custom_id"


async def test_a_surrogate_in_an_inline_chat_id_or_a_job_id_is_a_typed_error(keyed_fake, keys):
    _engine, _app, url = await keyed_fake()
    raw = json.dumps({"query": SUBMIT, "variables": {"input": {"items": [chat_item("id\ud800"), chat_item("fine")]}}})
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(f"{url}/graphql", content=raw, headers={**keys.headers("alice"), "content-type": "application/json"})
        job = r.json()["data"]["submitBatchJob"]
        assert job["counts"]["failed"] == 1, r.text
        for query in (GET, CANCEL):
            raw = json.dumps({"query": query, "variables": {"id": "batch_\ud800"}})
            r = await client.post(f"{url}/graphql", content=raw, headers={**keys.headers("alice"), "content-type": "application/json"})
            assert r.json()["errors"][0]["extensions"]["code"] == "JOB_NOT_FOUND", r.text
        r = await client.get(f"{url}/jobs/batch_%ED%A0%80/results.jsonl", headers=keys.headers("alice"))
        assert r.status_code == 404
    client_ = JobsClient(url, keys.headers("alice"))
    final = await client_.wait(job["id"])
    results = await client_.results(job["id"])
    assert final["counts"]["completed"] == 1 and {r["__typename"] for r in results} == {"ChatSuccess", "ChatError"}


def _cursor(value: object) -> str:
    import base64
    return base64.urlsafe_b64encode(json.dumps(value).encode() if not isinstance(value, bytes) else value).decode()


@pytest.mark.parametrize("cursor", [
    _cursor(["results", "abc"]), _cursor(["results", None]), _cursor(["results", {}]), _cursor(["results", True]),
    _cursor(b'["results", Infinity]'), _cursor(["results", 10**30]), _cursor(["results", -5]),
    _cursor(b"[" * 50_000 + b"]" * 50_000), "\ud800",
])
async def test_forged_results_cursors_are_invalid_input(keyed_fake, keys, cursor):
    _engine, _app, url = await keyed_fake()
    client = JobsClient(url, keys.headers("alice"))
    job = await client.submit_items([chat_item("a")])
    raw = json.dumps({"query": RESULTS, "variables": {"id": job["id"], "first": 5, "after": cursor}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{url}/graphql", content=raw, headers={**keys.headers("alice"), "content-type": "application/json"})
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT" and error["extensions"]["field"] == "after", r.text


@pytest.mark.parametrize("key", [[10**30, "batch_" + "0" * 32], [True, "batch_" + "0" * 32], [1.0, "\ud800"],
                                 [1.0, "x"], [1.0], "nested"])
async def test_forged_batch_jobs_cursors_are_invalid_input(keyed_fake, keys, key):
    _engine, _app, url = await keyed_fake()
    cursor = _cursor(b'["batchJobs", ' + b"[" * 50_000 + b"]" * 50_000 + b"]") if key == "nested" else _cursor(["batchJobs", *key])
    raw = json.dumps({"query": "query($a: String) { batchJobs(after: $a) { edges { cursor } } }", "variables": {"a": cursor}})
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{url}/graphql", content=raw, headers={**keys.headers("alice"), "content-type": "application/json"})
    assert r.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT", r.text


async def test_deep_metadata_an_upload_as_metadata_and_a_bad_map_path_are_client_errors(keyed_fake, keys):
    _engine, _app, url = await keyed_fake()
    deep = '{"a":' * 900 + '"leaf"' + "}" * 900  # written by hand: json.dumps itself cannot nest that deep
    raw = (f'{{"query": {json.dumps(SUBMIT)}, "variables": {{"input": {{"items": [{json.dumps(chat_item("a"))}], '
           f'"metadata": {deep}}}}}}}')
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{url}/graphql", content=raw, headers={**keys.headers("alice"), "content-type": "application/json"})
    error = r.json()["errors"][0]
    assert error["extensions"]["code"] == "INVALID_INPUT" and error["extensions"]["field"] == "metadata", r.text
    content = line("x", "hi").encode()
    for paths, status, code in ((["variables.input.file", "variables.input.metadata"], 200, "INVALID_INPUT"),
                                (["variables.input.file.0.1"], 400, "BAD_REQUEST"),
                                (["variables.nothing.here"], 400, "BAD_REQUEST"), ("variables.input.file", 400, "BAD_REQUEST")):
        operations = {"query": SUBMIT, "variables": {"input": {"file": None, "metadata": None}}}
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.post(f"{url}/graphql", headers=keys.headers("alice"),
                                data={"operations": json.dumps(operations), "map": json.dumps({"0": paths})},
                                files={"0": ("batch.jsonl", content, "application/jsonl")})
        assert r.status_code == status and r.headers["content-type"].startswith("application/json"), (paths, r.text)
        assert r.json()["errors"][0]["extensions"]["code"] == code, (paths, r.text)


# --- 7. cancelling a job while its input is stored ---------------------------------------------------

async def test_a_job_cancelled_while_validating_ends_with_counts_that_add_up_and_nothing_queued(keyed_fake, keys, tmp_path):
    _engine, _app, url = await keyed_fake(engine=Stalled(), max_job_items=60_000)
    client = JobsClient(url, keys.headers("alice"))
    content = "\n".join(line(f"v{i}", "hi") for i in range(40_000)).encode()
    submitting = asyncio.ensure_future(client.submit_file(content))
    job_id = None
    db = sqlite3.connect(tmp_path / "jobs.db")
    for _ in range(1000):  # cancel once part of the input is stored, the rest still being read
        row = db.execute("SELECT j.id, j.status, count(i.id) FROM batch_jobs j LEFT JOIN batch_items i ON i.job_id = j.id "
                         "GROUP BY j.id").fetchone()
        if row is not None and row[1] == "VALIDATING" and row[2] >= 1000:
            job_id = row[0]
            break
        await asyncio.sleep(0.005)
    assert job_id is not None, "the job was never seen VALIDATING with items stored"
    cancelled = (await client.ok(CANCEL, {"id": job_id}))["cancelBatchJob"]
    assert cancelled["status"] in ("CANCELLING", "CANCELLED")
    submitted = await submitting
    final = await client.wait(job_id, timeout=30)
    counts = final["counts"]
    assert final["status"] == "CANCELLED" and submitted["id"] == job_id
    assert counts["completed"] + counts["failed"] + counts["cancelled"] == counts["total"] and counts["total"] > 0
    assert db.execute("SELECT count(*) FROM batch_items WHERE status = 'queued'").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM batch_items WHERE job_id = ?", (job_id,)).fetchone() == (counts["total"],)


# --- 8. protocol errors are GraphQL errors ------------------------------------------------------------

@pytest.mark.parametrize("payload, code", [
    ({"query": "subscription { chatStream(input: {"}, "GRAPHQL_PARSE_FAILED"),
    ({"query": "subscription A { chatStream(input: {chatId: \"a\", userPrompt: \"hi\"}) { __typename } }",
      "operationName": "B"}, "OPERATION_NOT_FOUND"),
    ({"query": "query A { health { ready } } query C { health { ready } }"}, "OPERATION_NOT_FOUND"),
])
async def test_stream_request_errors_are_json_over_sse_and_error_messages_over_websocket(serve, payload, code):
    engine = FakeEngine()
    url = await serve(create_app(ApiSettings(), engine=engine))
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{url}/graphql", json=payload, headers={"accept": "text/event-stream"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.text
    assert r.json()["errors"][0]["extensions"]["code"] == code
    async with connect(url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"type": "subscribe", "id": "1", "payload": payload}))
        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert message["type"] == "error" and message["id"] == "1" and message["payload"][0]["extensions"]["code"] == code
        await ws.send(json.dumps({"type": "subscribe", "id": "2", "payload": {"query": "{ health { ready } }"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "next"  # the connection goes on


async def test_every_http_request_error_is_json_with_a_code_and_graphql_response_json_is_honoured(serve):
    url = await serve(create_app(ApiSettings(), engine=FakeEngine()))
    gqlr = "application/graphql-response+json"
    async with httpx.AsyncClient() as client:
        cases = [
            await client.post(f"{url}/graphql", json={"query": "query A { health { ready } }", "operationName": "B"}),
            await client.post(f"{url}/graphql", content=b"{", headers={"content-type": "application/json"}),
            await client.post(f"{url}/graphql", content=b"x", headers={"content-type": "text/plain"}),
            await client.get(f"{url}/graphql", params={"query": "mutation { chat(input: {chatId: \"a\", userPrompt: \"b\"}) { __typename } }"}),
            await client.post(f"{url}/graphql", json={"query": "query A { health { ready } }", "operationName": "B"},
                              headers={"accept": gqlr}),
        ]
        for r in cases:
            assert 400 <= r.status_code < 500 and r.headers["content-type"].split(";")[0] in ("application/json", gqlr), r.text
            assert r.json()["errors"][0]["extensions"]["code"], r.text
        assert cases[-1].headers["content-type"].startswith(gqlr)
        syntax = await client.post(f"{url}/graphql", json={"query": "{ health {"})
        assert syntax.status_code == 200 and syntax.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
        assert "data" not in syntax.json()
        for accept in (gqlr, f"{gqlr}, application/json;q=0.9"):
            invalid = await client.post(f"{url}/graphql", json={"query": "{ nope }"}, headers={"accept": accept})
            assert invalid.status_code == 400 and invalid.headers["content-type"].startswith(gqlr)
            assert invalid.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED" and "data" not in invalid.json()
            ok = await client.post(f"{url}/graphql", json={"query": "{ health { ready } }"}, headers={"accept": accept})
            assert ok.status_code == 200 and ok.headers["content-type"].startswith(gqlr) and ok.json()["data"]["health"]
        plain = await client.post(f"{url}/graphql", json={"query": "{ health { ready } }"})
        assert plain.headers["content-type"].startswith("application/json")


# --- 9. a format nothing can match is refused (real model: the engine compiles it) -----------------

async def test_a_regex_that_matches_nothing_is_invalid_input_not_an_empty_success(live):
    for regex in (r"[^\s\S]", r"\d{3}[^\s\S]"):
        r = await post(live, CHAT, {"input": {"chatId": "r", "userPrompt": "Say hi.",
                                              "options": {"maxTokens": 8, "responseFormat": {"regex": regex}}}})
        chat = r.json()["data"]["chat"]
        assert chat["__typename"] == "ChatError" and chat["code"] == "INVALID_INPUT", chat
        assert chat["field"] == "options.responseFormat" and "responseFormat.regex admits no text" in chat["message"], chat


def test_a_format_that_dead_ends_midway_ends_the_answer_as_incomplete(llm):
    import llguidance

    from inference.engine.structured import LIMITS, FormatDeadEnd, follow, grammar_text

    matcher = llguidance.LLMatcher(llm.formats.adapter, grammar_text(ResponseFormat.of(regex=r"[^\s\S]")), log_level=0,
                                   limits=llguidance.LLParserLimits(**LIMITS))
    matcher.compute_bitmask()
    with pytest.raises(FormatDeadEnd):
        follow(matcher, llm.tokenizer.eos_token_id, None)
    with pytest.raises(InvalidFormat):
        llm.prepare(ChatRequest(messages=(ChatMessage(role="user", content="hi"),),
                                params=SamplingParams(response_format=ResponseFormat.of(regex=r"[^\s\S]"))))


async def test_sighup_reloads_the_keys_file_and_a_broken_file_keeps_the_keys_in_force(tmp_path):
    import os
    import signal

    from http_common.keys import KeyRing, new_key, reload_on_hangup

    keys = Keys(tmp_path / "k", {"a": "", "b": ""})
    ring = KeyRing.from_file(keys.path)
    reload_on_hangup(ring)
    path, before = Path(keys.path), os.stat(keys.path)
    fresh, fresh_line = new_key("b")  # b's key rotated, in a line of the same length, the file's time kept
    text = path.read_text()
    old_line = next(ln for ln in text.splitlines() if ln.startswith("b:"))
    path.write_text(text.replace(old_line, fresh_line))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert ring.authenticate(keys.keys["b"]) is not None  # nothing in its stat says it changed
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.1)
    assert ring.authenticate(keys.keys["b"]) is None and ring.authenticate(fresh) is not None
    path.write_text("b:not-a-digest\n")
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.1)
    assert ring.authenticate(fresh) is not None and ring.authenticate(keys.keys["a"]) is not None
