"""The job runner: claims items from the store and runs them on the engine, through the boundary's
``EngineClient`` (the embedded engine or a remote one alike), at ``BATCH`` priority.

It keeps at most ``MAX_RUNNING - JOB_RESERVED_SLOTS`` items in flight, fewer while interactive
chats hold slots: the engine admits interactive requests first, and the reserved slots let one
start at once even while a job runs. Results are written as items end, grouped (the runner
wakes, waits ``GATHER_S`` for more, and writes them in one transaction). An item the engine
refuses for lack of room (``OVERLOADED``, ``UNAVAILABLE``) goes back to the queue, not to its
results. Every ``CHECK_S`` it looks whether the jobs it runs were cancelled or expired and aborts
their items; every ``HEARTBEAT_S`` it extends its claims' leases; every ``SWEEP_S`` it expires
and deletes old jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from http_common.keys import ApiKey, KeyRing
from inference.boundary import BATCH, Completion, EngineClient, EngineError, ErrorCode, RequestCancelled, Ticket, Unauthenticated
from inference.service.wire import ChatCompletionRequest

from ..observability import ApiMetrics
from ..quotas import Quotas, estimate_tokens
from .outcome import ItemOutcome
from .store import CANCELLED_RESULT, EXPIRED_RESULT, Claimed, Finished, JobStore, ended
from .tables import ItemStatus, JobStatus

log = logging.getLogger(__name__)

LEASE_S = 30.0  # a claim outlives its worker by this much at most (PostgreSQL: then another takes it)
HEARTBEAT_S = 10.0
CHECK_S = 0.5
SWEEP_S = 30.0
IDLE_POLL_S = 0.5
GATHER_S = 0.02
RETRY = (ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE)  # the engine had no room: the item is queued again
DEFAULT_SLOTS = 64  # when an upstream does not say how many sequences it runs


def revoked_result(owner: str) -> ItemOutcome:
    """The result of an item whose job's key is gone: it does not run."""
    return ItemOutcome.of(Unauthenticated(f"the API key {owner!r} that submitted this job was revoked or has expired; "
                                          "the item did not run"))


async def _result(ticket: Ticket) -> Completion | EngineError:
    try:
        return await ticket.result()
    finally:
        ticket.close()


@dataclass
class InFlight:
    claimed: Claimed
    task: asyncio.Task[Completion | EngineError]
    reserved: int = 0
    abort_as: ItemOutcome | None = None  # the result to record when aborted (None: give the item back)


class JobRunner:
    def __init__(self, store: JobStore, engine: EngineClient, *, reserved_slots: int, retention_s: float,
                 max_in_flight: int = DEFAULT_SLOTS,
                 draining: Callable[[], bool] = lambda: False, quotas: Quotas | None = None,
                 keyring: KeyRing | None = None, metrics: ApiMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.engine = engine
        self.reserved_slots = reserved_slots
        self.max_in_flight = max_in_flight
        self.retention_s = retention_s
        self.draining = draining
        self.quotas = quotas
        self.keyring = keyring
        self.worker = uuid.uuid4().hex[:16]
        self.in_flight: dict[int, InFlight] = {}
        self.done: list[Finished] = []  # ended, to write
        self.retry: list[int] = []  # claimed but not run, to give back
        self._settling: set[asyncio.Future[None]] = set()
        self.submitted = 0  # engine requests made, for tests and metrics
        self.written: dict[ItemStatus, int] = {}  # items written by this runner, by status
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._quota_until: dict[str, float] = {}
        self._last = {"check": 0.0, "heartbeat": time.monotonic(), "sweep": 0.0}

    async def start(self) -> None:
        if not self.store.shared:
            requeued = await self.store.requeue_running()
            if requeued:
                log.info("jobs: %d items left running by a previous process are queued again", requeued)
        self._task = asyncio.create_task(self._loop(), name="job-runner")

    async def stop(self) -> None:
        """Stop claiming; items in flight go back to the queue (a restart runs them), and what has
        ended is written."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        tasks = [f.task for f in self.in_flight.values()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, *self._settling, return_exceptions=True)
        await asyncio.sleep(0)  # the tasks' done callbacks
        try:
            await self._flush()
        except Exception:
            log.exception("jobs: could not write the last results; their items run again after a restart")

    def wake(self) -> None:
        """Look for work now (a job was just submitted here)."""
        self._wake.set()

    def abort_job(self, job_id: str, result: ItemOutcome = CANCELLED_RESULT) -> None:
        """Abort this job's items that run here; they end with ``result``."""
        for f in self.in_flight.values():
            if f.claimed.job_id == job_id and f.abort_as is None:
                f.abort_as = result
                f.task.cancel()

    def room(self) -> int:
        """How many more items to put in flight now."""
        if self.draining() or not self.engine.running:
            return 0
        stats = self.engine.stats()
        slots = min((self.engine.info().max_running or DEFAULT_SLOTS) - self.reserved_slots, self.max_in_flight)
        interactive = max(0, stats.running + stats.waiting - len(self.in_flight))
        return max(0, slots - interactive - len(self.in_flight))

    # --- the loop ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("jobs: the runner's step failed; retrying")
                await asyncio.sleep(1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL_S):
                    await self._wake.wait()
            await asyncio.sleep(GATHER_S)
            self._wake.clear()

    def _due(self, what: str, every: float) -> bool:
        now = time.monotonic()
        if now - self._last[what] < every:
            return False
        self._last[what] = now
        return True

    async def _tick(self) -> None:
        await self._flush()
        if self.in_flight and self._due("check", CHECK_S):
            await self._check_jobs()
        if self._due("heartbeat", HEARTBEAT_S):
            await self.store.extend(self.worker, [f.claimed.item_id for f in self.in_flight.values()], LEASE_S)
        if self._due("sweep", SWEEP_S):
            expired, deleted = await self.store.sweep(self.retention_s)
            if expired or deleted:
                log.info("jobs: %d expired, %d deleted past retention", expired, deleted)
        room = self.room()
        if room > 0:
            claimed = await self.store.claim(self.worker, room, LEASE_S)
            if claimed:
                await self._submit(claimed)

    async def _flush(self) -> None:
        if self.done:
            done, self.done = self.done, []
            for status, n in (await self.store.record(self.worker, done)).items():
                self.written[status] = self.written.get(status, 0) + n
                if self.metrics is not None:
                    self.metrics.job_items.labels(status.value).inc(n)
        if self.retry:
            retry, self.retry = self.retry, []
            await self.store.release(self.worker, retry)

    async def _check_jobs(self) -> None:
        statuses = await self.store.statuses(sorted({f.claimed.job_id for f in self.in_flight.values()}))
        for job_id in {f.claimed.job_id for f in self.in_flight.values()}:
            status = statuses.get(job_id)
            if status is None or not status.active:
                self.abort_job(job_id, EXPIRED_RESULT if status is JobStatus.EXPIRED else CANCELLED_RESULT)

    # --- items ---------------------------------------------------------------------------

    async def _submit(self, claimed: Sequence[Claimed]) -> None:
        now = time.monotonic()
        give_back: list[int] = []
        runnable: list[tuple[Claimed, int]] = []
        revoked: dict[str, str] = {}  # job id -> its owner, whose key is gone
        for c in claimed:
            if self._revoked(c.owner):
                revoked[c.job_id] = c.owner
                self.done.append(Finished(c.item_id, c.job_id, ItemStatus.CANCELLED, revoked_result(c.owner)))
                continue
            if self._quota_until.get(c.owner, 0.0) > now:
                give_back.append(c.item_id)
                continue
            reserved = await self._admit(c)
            if reserved is None:
                give_back.append(c.item_id)
            else:
                runnable.append((c, reserved))
        requests = [replace(ChatCompletionRequest.model_validate_json(c.request).to_request(),
                            request_id=f"{c.job_id}:{c.custom_id}", priority=BATCH) for c, _ in runnable]
        limit = self.engine.info().max_batch_items or len(requests) or 1
        tickets: list[Ticket | EngineError] = []
        for at in range(0, len(requests), limit):
            tickets += await self.engine.submit(requests[at:at + limit])
        self.submitted += len(requests)
        for (c, reserved), ticket in zip(runnable, tickets, strict=True):
            if isinstance(ticket, EngineError):
                await self._settle(c, reserved, None)
                if ticket.code in RETRY:
                    give_back.append(c.item_id)
                else:
                    self.done.append(ended(c.item_id, c.job_id, ItemOutcome.of(ticket)))
                continue
            f = InFlight(c, asyncio.create_task(_result(ticket)), reserved)
            f.task.add_done_callback(functools.partial(self._ended, f))  # runs even if cancelled unstarted
            self.in_flight[c.item_id] = f
        await self.store.release(self.worker, give_back)
        for job_id, owner in sorted(revoked.items()):
            log.warning("jobs: job %s is cancelled: its API key %r was revoked or has expired", job_id, owner)
            await self.store.cancel(job_id, owner, result=revoked_result(owner),
                                    error=f"cancelled: the API key {owner!r} that submitted it was revoked or has expired")
            self.abort_job(job_id, revoked_result(owner))

    def _ended(self, f: InFlight, task: asyncio.Task[Completion | EngineError]) -> None:
        """An item's task is done: queue its result for writing (or the item for release)."""
        self.in_flight.pop(f.claimed.item_id, None)
        result = None if task.cancelled() else task.result()
        if f.reserved:
            settling = asyncio.ensure_future(self._settle(f.claimed, f.reserved, result if isinstance(result, Completion) else None))
            self._settling.add(settling)
            settling.add_done_callback(self._settling.discard)
        c = f.claimed
        if f.abort_as is not None and (result is None or isinstance(result, RequestCancelled)):
            self.done.append(Finished(c.item_id, c.job_id, ItemStatus.CANCELLED, f.abort_as))  # the job was cancelled or expired
        elif result is None or (isinstance(result, EngineError) and result.code in RETRY):
            self.retry.append(c.item_id)  # stopping, or the engine had no room: queued again
        else:
            self.done.append(ended(c.item_id, c.job_id, ItemOutcome.of(result)))
        self._wake.set()

    async def _admit(self, c: Claimed) -> int | None:
        """Charge the owner's quota (its tokens count at job priority: a spent quota makes the job
        wait, it does not fail it); None when refused."""
        key = self._key(c.owner)
        if self.quotas is None or key is None:
            return 0
        request = ChatCompletionRequest.model_validate_json(c.request).to_request()
        reserved = estimate_tokens(request, self.engine.info().default_max_new_tokens or 256)
        retry_ms = await self.quotas.admit(key, reserved)
        if retry_ms is None:
            return reserved
        self._quota_until[c.owner] = time.monotonic() + retry_ms / 1000
        return None

    async def _settle(self, c: Claimed, reserved: int, result: Completion | None) -> None:
        key = self._key(c.owner)
        if self.quotas is not None and key is not None and reserved:
            with contextlib.suppress(Exception):
                await self.quotas.settle(key, reserved, result.usage.total_tokens if result else 0)

    def _key(self, owner: str) -> ApiKey | None:
        return self.keyring.owner(owner) if self.keyring is not None else None

    def _revoked(self, owner: str) -> bool:
        """With keys on, the key that submitted a job is gone from the keys file or expired."""
        return self.keyring is not None and self.keyring.owner(owner) is None
