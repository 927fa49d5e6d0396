"""What the API does with batch jobs: submit, cancel, and the store and runner it owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from http_common.keys import KeyRing
from inference.boundary import EngineClient

from ..observability import ApiMetrics
from ..quotas import Quotas
from ..settings import ApiSettings
from .intake import Checker
from .runner import JobRunner
from .store import Job, JobStore, NewItem, database_url
from .tables import JobStatus

log = logging.getLogger(__name__)


class Jobs:
    def __init__(self, settings: ApiSettings, engine: EngineClient, *, draining: Callable[[], bool] = lambda: False,
                 quotas: Quotas | None = None, keyring: KeyRing | None = None, metrics: ApiMetrics | None = None) -> None:
        self.settings = settings
        self.store = JobStore(database_url(settings.jobs_database_url, settings.data_dir))
        self.runner = JobRunner(self.store, engine, reserved_slots=settings.job_reserved_slots,
                                max_in_flight=settings.job_max_in_flight,
                                retention_s=settings.job_retention, draining=draining, quotas=quotas, keyring=keyring,
                                metrics=metrics)
        self.ready = False

    async def start(self) -> None:
        """Migrate the database and start the runner; raises if the database cannot be reached."""
        await self.store.start()
        await self.runner.start()
        self.ready = True
        log.info("jobs: database %s ready", self.store.url.render_as_string(hide_password=True))

    async def stop(self) -> None:
        self.ready = False
        await self.runner.stop()
        await self.store.close()

    def checker(self, max_new_tokens_cap: int) -> Checker:
        s = self.settings
        return Checker(max_new_tokens_cap, s.max_prompt_chars, s.max_chat_id_chars)

    async def submit(self, owner: str, chunks: AsyncIterator[list[NewItem]], metadata: Any) -> Job:
        """Store the items as they come; the job is QUEUED once all are in, or FAILED (its items
        deleted) past ``MAX_JOB_ITEMS`` or with none."""
        limit = self.settings.max_job_items
        job_id = await self.store.create(owner, metadata, self.settings.job_completion_window)
        total = failed = 0  # items stored, and of them refused
        try:
            async for chunk in chunks:
                if total + len(chunk) > limit:
                    await self.store.refuse(job_id, f"the input has more than {limit} items, the limit (MAX_JOB_ITEMS)")
                    break
                if not await self.store.add(job_id, total, chunk):  # cancelled while its input was read
                    await self.store.seal(job_id, total, failed)
                    break
                total += len(chunk)
                failed += sum(it.result is not None for it in chunk)
            else:
                if total:
                    await self.store.seal(job_id, total, failed)
                else:
                    await self.store.refuse(job_id, "the input holds no items")
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.refuse(job_id, "the input could not be read to its end"))
            raise
        self.runner.wake()
        job = await self.store.job(job_id)
        assert job is not None  # just made
        return job

    async def cancel(self, job_id: str, owner: str) -> Job | None:
        job = await self.store.cancel(job_id, owner)
        if job is not None and job.status in (JobStatus.CANCELLING, JobStatus.CANCELLED):
            self.runner.abort_job(job_id)  # here at once; other replicas within the runner's CHECK_S
        return job
