"""Batch jobs on a real PostgreSQL: two API processes drain one job together (items claimed with
FOR UPDATE SKIP LOCKED), over one inference service with the real model."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path

import httpx
import pytest
from jobs_client import JobsClient, line
from postgres_server import postgres_url  # noqa: F401
from sqlalchemy import select
from test_jobs_model import assert_each_once, bad_lines
from test_quota_redis import ApiProcess
from test_remote import Service

from graphql_api.jobs.store import JobStore
from graphql_api.jobs.tables import items


def items_written(metrics: str) -> int:
    return int(sum(float(v) for v in re.findall(r'^smollm_graphql_job_items_total\{status="\w+"\} (\S+)$', metrics, re.M)))


@pytest.mark.model  # one inference service with the model, two API processes in front of it
async def test_two_api_processes_drain_one_job_from_postgresql(postgres_url):  # noqa: F811
    good = [f"g{i}" for i in range(150)]
    lines = [line(c, f"Name a color, number {i}.", max_tokens=2) for i, c in enumerate(good)]
    lines[70:70] = bad_lines()
    bad = ["line-71", "b-no-body", "b-zero", "b-temp", "b-blank"]
    service = Service.__new__(Service)
    apis: list[ApiProcess] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            await asyncio.to_thread(service.__init__)
            env = {**os.environ, "INFERENCE_URL": service.url, "JOBS_DATABASE_URL": postgres_url, "LOG_FORMAT": "json",
                   "DATA_DIR": tmp}
            env.pop("PORT", None)
            apis = [ApiProcess(env, Path(tmp), f"api{i}") for i in (1, 2)]  # both migrate at once: one does, under a lock
            async with httpx.AsyncClient() as http:
                for api in apis:
                    await api.wait_ready(http)
                job = await JobsClient(apis[0].url).submit_file(("\n".join(lines) + "\n").encode())
                # Either process answers for the job: it lives in the shared database.
                done = await JobsClient(apis[1].url).wait(job["id"], timeout=300)
                assert done["status"] == "COMPLETED"
                assert done["counts"] == {"total": 155, "completed": 150, "failed": 5, "cancelled": 0}
                assert_each_once(await JobsClient(apis[1].url).results(job["id"], page=1000), good, bad)
                written = [items_written((await http.get(f"{api.url}/metrics")).text) for api in apis]
            assert sum(written) == len(good) and min(written) > 0, written  # both drained it, no item twice
            store = JobStore(postgres_url)  # and in the database itself: every item was claimed once
            await store.start()
            try:
                assert store.engine is not None
                async with store.engine.connect() as conn:
                    attempts = (await conn.execute(select(items.c.attempts).where(
                        items.c.job_id == job["id"], items.c.request.is_not(None)))).scalars().all()
                assert sorted(attempts) == [1] * len(good)
            finally:
                await store.close()
        finally:
            for api in apis:
                api.stop()
            if hasattr(service, "proc"):
                service.kill()
