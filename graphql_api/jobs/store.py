"""The job store: batch jobs and their items in a SQL database, through SQLAlchemy's asyncio API.

SQLite (aiosqlite) by default: one file, WAL mode, every transaction ``BEGIN IMMEDIATE`` so that a
read that turns into a write never fails on a lock; it belongs to one server process. PostgreSQL
(asyncpg) by URL: several API replicas share one queue and claim items with ``FOR UPDATE SKIP
LOCKED``. The schema is made and upgraded by Alembic at ``start`` (under an advisory lock on
PostgreSQL, so that replicas starting together migrate once).

Invariants:
- an item is ``running`` only while claimed: ``claimed_by`` a worker until ``lease_until``; a
  worker extends its leases while it runs them, and an expired lease (a crashed worker) makes the
  item claimable again;
- a result is written only by the worker that holds the item's claim, and only once (the item
  leaves ``running`` in the same statement), so no custom_id is ever answered twice;
- a job's counters change in the same transaction as the items they count, and a job whose
  counters add up to its total is final in that transaction too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, and_, case, delete, event, insert, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from inference.boundary import RequestCancelled, RequestTimeout

from .outcome import ItemOutcome
from .tables import ItemStatus, JobStatus, items, jobs

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x6A6F6273  # pg_advisory_xact_lock key: replicas starting together migrate one at a time
INSERT_CHUNK = 1000
ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
CANCELLED_RESULT = ItemOutcome.of(RequestCancelled("the job was cancelled before this item ended"))
EXPIRED_RESULT = ItemOutcome.of(RequestTimeout("the job's completion window ended before this item ran"))


JOB_ID = re.compile(r"batch_[0-9a-f]{32}")
READ_ONLY = "jobs_read_only"  # execution option of read connections (see _read)

P = ParamSpec("P")
T = TypeVar("T")


def unbroken(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run a store operation to its end even if its caller is cancelled: a resolver cancelled in
    the middle of a transaction (a client that went away) would otherwise leave its connection
    mid-transaction, holding SQLite's write lock for every other key until restart. The caller
    still sees its CancelledError at once; the operation commits or rolls back on its own, and
    its connection goes back to the pool clean. ``close`` waits for such operations."""

    @functools.wraps(method)
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.ensure_future(method(*args, **kwargs))
        _OPERATIONS.add(task)
        task.add_done_callback(_finished)
        return await asyncio.shield(task)

    return run


_OPERATIONS: set[asyncio.Future[Any]] = set()


def _finished(task: asyncio.Future[Any]) -> None:
    _OPERATIONS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("a job store operation whose caller had gone failed: %r", task.exception())


def database_url(url: str, data_dir: Path) -> str:
    """``url``, or the default SQLite file under ``data_dir``; a plain ``postgresql://`` or
    ``sqlite://`` URL gets its asyncio driver (asyncpg, aiosqlite)."""
    if not url:
        return f"sqlite+aiosqlite:///{data_dir / 'jobs.db'}"
    for plain, driver in (("postgresql://", "postgresql+asyncpg://"), ("postgres://", "postgresql+asyncpg://"),
                          ("sqlite://", "sqlite+aiosqlite://")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    status: JobStatus
    metadata: Any
    total: int
    completed: int
    failed: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    cancelled_at: float | None
    expires_at: float

    @classmethod
    def of(cls, row: Any) -> Job:
        m = row._mapping
        return cls(m["id"], m["owner"], JobStatus(m["status"]), json.loads(m["job_metadata"]) if m["job_metadata"] else None,
                   m["total"], m["completed"], m["failed"], m["cancelled"], m["prompt_tokens"], m["completion_tokens"],
                   m["error"], m["created_at"], m["started_at"], m["finished_at"], m["cancelled_at"], m["expires_at"])


@dataclass(frozen=True)
class NewItem:
    """One input item: the request body to run (JSON), or the result of a refused line."""

    custom_id: str
    request: str | None
    result: ItemOutcome | None = None


@dataclass(frozen=True)
class Claimed:
    item_id: int
    job_id: str
    owner: str
    custom_id: str
    request: str


@dataclass(frozen=True)
class Finished:
    item_id: int
    job_id: str
    status: ItemStatus
    result: ItemOutcome
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ItemResult:
    idx: int
    custom_id: str
    status: ItemStatus
    result: ItemOutcome


def ended(item_id: int, job_id: str, outcome: ItemOutcome, status: ItemStatus | None = None) -> Finished:
    usage = outcome.usage
    if status is None:
        status = ItemStatus.FAILED if outcome.error is not None else ItemStatus.COMPLETED
    return Finished(item_id, job_id, status, outcome, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)


class JobStore:
    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.engine: AsyncEngine | None = None
        self._turn = 0  # which active job claims first: it rotates, so a claim of one item is fair too

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def shared(self) -> bool:
        """Several processes may share this store (PostgreSQL); SQLite belongs to one."""
        return self.dialect != "sqlite"

    async def start(self) -> None:
        """Connect and migrate the schema to the newest revision."""
        if self.dialect == "sqlite":
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(self.url)
            _sqlite_setup(self.engine)
        else:
            self.engine = create_async_engine(self.url, pool_size=5, max_overflow=5, pool_pre_ping=True)
        async with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        if _OPERATIONS:  # operations whose callers went away end before their connections are closed
            await asyncio.gather(*_OPERATIONS, return_exceptions=True)
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    def _db(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("the job store is not started")
        return self.engine

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: on SQLite its transaction is a deferred ``BEGIN`` (a WAL
        snapshot, which takes no lock and waits for nobody); writes take ``BEGIN IMMEDIATE``."""
        async with self._db().connect() as conn:
            await conn.execution_options(**{READ_ONLY: True})
            yield conn

    # --- submitting --------------------------------------------------------------------------

    @unbroken
    async def create(self, owner: str, metadata: Any, window_s: float) -> str:
        """A new job, VALIDATING until ``seal``: no worker claims its items before that."""
        job_id = f"batch_{uuid.uuid4().hex}"  # JOB_ID
        now = time.time()
        async with self._db().begin() as conn:
            await conn.execute(insert(jobs).values(
                id=job_id, owner=owner, status=JobStatus.VALIDATING.value,
                job_metadata=None if metadata is None else json.dumps(metadata), total=0, completed=0, failed=0,
                cancelled=0, prompt_tokens=0, completion_tokens=0, created_at=now, expires_at=now + window_s))
        return job_id

    @unbroken
    async def add(self, job_id: str, first_idx: int, new: Sequence[NewItem]) -> bool:
        """Store items ``first_idx``.. of a VALIDATING job (refused lines already ended, as failed);
        False, storing nothing, once the job is no longer VALIDATING (it was cancelled meanwhile:
        the rest of its input need not be read)."""
        now = time.time()
        rows = [{"job_id": job_id, "idx": first_idx + i, "custom_id": it.custom_id, "request": it.request,
                 "result": None if it.result is None else it.result.dump(), "attempts": 0,
                 "status": ItemStatus.QUEUED.value if it.result is None else ItemStatus.FAILED.value,
                 "finished_at": None if it.result is None else now} for i, it in enumerate(new)]
        async with self._db().begin() as conn:
            status = (await conn.execute(select(jobs.c.status).where(jobs.c.id == job_id))).scalar()
            if status != JobStatus.VALIDATING.value:
                return False
            for at in range(0, len(rows), INSERT_CHUNK):
                await conn.execute(insert(items), rows[at:at + INSERT_CHUNK])
        return True

    @unbroken
    async def seal(self, job_id: str, total: int, failed: int) -> None:
        """Every item is stored (``total`` of them, ``failed`` refused): the job is QUEUED, or
        COMPLETED at once if no item can run. A job cancelled while VALIDATING ends CANCELLED here,
        every item stored and not refused cancelled, so that its counts add up to its total."""
        now = time.time()
        runnable = total - failed
        async with self._db().begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == JobStatus.VALIDATING.value).values(
                total=total, failed=failed, status=(JobStatus.QUEUED if runnable else JobStatus.COMPLETED).value,
                finished_at=None if runnable else now))
            row = (await conn.execute(select(jobs.c.status).where(jobs.c.id == job_id))).first()
            if row is not None and row.status == JobStatus.CANCELLING.value:
                n = (await conn.execute(update(items).where(items.c.job_id == job_id, items.c.status == ItemStatus.QUEUED.value)
                                        .values(status=ItemStatus.CANCELLED.value, result=CANCELLED_RESULT.dump(),
                                                finished_at=now))).rowcount
                await conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                    total=total, failed=failed, cancelled=jobs.c.cancelled + n))
                await _settle(conn, [job_id], now)

    @unbroken
    async def refuse(self, job_id: str, message: str) -> None:
        """The input was refused as a whole: the job is FAILED with ``message``, its items deleted."""
        async with self._db().begin() as conn:
            await conn.execute(delete(items).where(items.c.job_id == job_id))
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                status=JobStatus.FAILED.value, error=message, total=0, failed=0, cancelled=0, finished_at=time.time()))

    # --- reading -----------------------------------------------------------------------------

    @unbroken
    async def job(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, if it exists and (with ``owner``) belongs to that owner (an id not of the form
        this store makes exists nowhere, and is not looked up)."""
        if not JOB_ID.fullmatch(job_id):
            return None
        query = select(jobs).where(jobs.c.id == job_id)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return Job.of(row) if row is not None else None

    @unbroken
    async def jobs(self, owner: str, limit: int, after: tuple[float, str] | None) -> list[Job]:
        """The owner's jobs, newest first, after the (created_at, id) cursor."""
        query = select(jobs).where(jobs.c.owner == owner)
        if after is not None:
            created, job_id = after
            query = query.where(or_(jobs.c.created_at < created, and_(jobs.c.created_at == created, jobs.c.id < job_id)))
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        async with self._read() as conn:
            return [Job.of(r) for r in (await conn.execute(query)).all()]

    @unbroken
    async def results(self, job_id: str, limit: int, after_idx: int = -1) -> list[ItemResult]:
        """Ended items in input order, after position ``after_idx``."""
        query = (select(items.c.idx, items.c.custom_id, items.c.status, items.c.result)
                 .where(items.c.job_id == job_id, items.c.idx > after_idx, items.c.result.is_not(None))
                 .order_by(items.c.idx).limit(limit))
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [ItemResult(r.idx, r.custom_id, ItemStatus(r.status), ItemOutcome.load(r.result)) for r in rows]

    async def all_results(self, job_id: str, page: int = 500) -> AsyncIterator[ItemResult]:
        """Every ended item, read a page at a time (memory stays bounded)."""
        after = -1
        while True:
            batch = await self.results(job_id, page, after)
            for r in batch:
                yield r
            if len(batch) < page:
                return
            after = batch[-1].idx

    @unbroken
    async def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        if not job_ids:
            return {}
        async with self._read() as conn:
            rows = (await conn.execute(select(jobs.c.id, jobs.c.status).where(jobs.c.id.in_(list(job_ids))))).all()
        return {r.id: JobStatus(r.status) for r in rows}

    # --- cancelling, expiring, forgetting ----------------------------------------------------

    @unbroken
    async def cancel(self, job_id: str, owner: str, result: ItemOutcome = CANCELLED_RESULT, error: str | None = None) -> Job | None:
        """Items not started are cancelled now (ending with ``result``); running ones are aborted by
        the workers that hold them (they see CANCELLING); the job is CANCELLED once none runs.
        Finished items are kept. A final job is left as it is. A job still VALIDATING (its input
        being stored) is CANCELLING until ``seal``, which cancels whatever was stored."""
        if not JOB_ID.fullmatch(job_id):
            return None
        now = time.time()
        async with self._db().begin() as conn:
            row = (await conn.execute(select(jobs.c.status).where(jobs.c.id == job_id, jobs.c.owner == owner))).first()
            if row is None:
                return None
            status = JobStatus(row.status)
            if not status.final and status is not JobStatus.CANCELLING:
                n = (await conn.execute(update(items).where(items.c.job_id == job_id, items.c.status == ItemStatus.QUEUED.value)
                                        .values(status=ItemStatus.CANCELLED.value, result=result.dump(), finished_at=now))).rowcount
                await conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                    status=JobStatus.CANCELLING.value, cancelled=jobs.c.cancelled + n, cancelled_at=now, error=error))
                if status is not JobStatus.VALIDATING:  # its total is not known yet: seal settles it
                    await _settle(conn, [job_id], now)
        return await self.job(job_id, owner)

    @unbroken
    async def sweep(self, retention_s: float) -> tuple[int, int]:
        """Expire jobs past their completion window (what finished is kept; items not started are
        cancelled), and delete jobs, with their items, that ended more than ``retention_s`` ago.
        Returns (expired, deleted)."""
        now = time.time()
        async with self._db().begin() as conn:
            late = (await conn.execute(select(jobs.c.id).where(
                jobs.c.status.in_([*ACTIVE, JobStatus.VALIDATING.value, JobStatus.CANCELLING.value]),
                jobs.c.expires_at < now))).scalars().all()
            for job_id in sorted(late):
                n = (await conn.execute(update(items).where(items.c.job_id == job_id, items.c.status == ItemStatus.QUEUED.value)
                                        .values(status=ItemStatus.CANCELLED.value, result=EXPIRED_RESULT.dump(),
                                                finished_at=now))).rowcount
                await conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                    status=JobStatus.EXPIRED.value, cancelled=jobs.c.cancelled + n, finished_at=now))
            old = select(jobs.c.id).where(jobs.c.finished_at < now - retention_s,
                                          jobs.c.status.in_([s.value for s in JobStatus if s.final]))
            gone = (await conn.execute(old)).scalars().all()
            if gone:
                await conn.execute(delete(items).where(items.c.job_id.in_(gone)))
                await conn.execute(delete(jobs).where(jobs.c.id.in_(gone)))
        return len(late), len(gone)

    # --- the workers' side -------------------------------------------------------------------

    @unbroken
    async def claim(self, worker: str, n: int, lease_s: float) -> list[Claimed]:
        """Claim up to ``n`` items to run, shared fairly between active jobs: each job gets an equal
        share, what some cannot use goes to the others, and the job served first rotates from one
        claim to the next. An item whose lease expired (its worker died) is claimable again."""
        now = time.time()
        claimed: list[Claimed] = []
        async with self._db().begin() as conn:
            active = (await conn.execute(select(jobs.c.id, jobs.c.owner).where(jobs.c.status.in_(ACTIVE))
                                         .order_by(jobs.c.created_at))).all()
            if not active:
                return []
            self._turn = (self._turn + 1) % len(active)
            active = [*active[self._turn:], *active[:self._turn]]
            share = max(1, -(-n // len(active)))
            for rounds in (share, n):
                for job in active:
                    want = min(rounds, n - len(claimed))
                    if want <= 0:
                        break
                    claimed += await self._claim_from(conn, job.id, job.owner, worker, want, now, lease_s)
            started = sorted({c.job_id for c in claimed})
            if started:
                await conn.execute(update(jobs).where(jobs.c.id.in_(started), jobs.c.status == JobStatus.QUEUED.value)
                                   .values(status=JobStatus.RUNNING.value, started_at=now))
        return claimed

    async def _claim_from(self, conn: AsyncConnection, job_id: str, owner: str, worker: str, n: int, now: float,
                          lease_s: float) -> list[Claimed]:
        claimable = or_(items.c.status == ItemStatus.QUEUED.value,
                        and_(items.c.status == ItemStatus.RUNNING.value, items.c.lease_until < now))
        chosen = (select(items.c.id).where(items.c.job_id == job_id, claimable).order_by(items.c.idx).limit(n)
                  .with_for_update(skip_locked=True))
        rows = (await conn.execute(
            update(items).where(items.c.id.in_(chosen))
            .values(status=ItemStatus.RUNNING.value, claimed_by=worker, lease_until=now + lease_s, attempts=items.c.attempts + 1)
            .returning(items.c.id, items.c.custom_id, items.c.request))).all()
        return [Claimed(r.id, job_id, owner, r.custom_id, r.request) for r in rows]

    @unbroken
    async def extend(self, worker: str, item_ids: Sequence[int], lease_s: float) -> None:
        if item_ids:
            async with self._db().begin() as conn:
                await conn.execute(update(items).where(items.c.id.in_(list(item_ids)), items.c.claimed_by == worker,
                                                       items.c.status == ItemStatus.RUNNING.value)
                                   .values(lease_until=time.time() + lease_s))

    @unbroken
    async def release(self, worker: str, item_ids: Sequence[int]) -> None:
        """Give claimed items back unrun (queued again, for any worker)."""
        if item_ids:
            async with self._db().begin() as conn:
                await conn.execute(update(items).where(items.c.id.in_(list(item_ids)), items.c.claimed_by == worker,
                                                       items.c.status == ItemStatus.RUNNING.value)
                                   .values(status=ItemStatus.QUEUED.value, claimed_by=None, lease_until=None))

    @unbroken
    async def record(self, worker: str, finished: Sequence[Finished]) -> dict[ItemStatus, int]:
        """Write ended items (one transaction) and their jobs' counters; returns how many were
        written, by status. An item no longer claimed by ``worker`` (its lease expired and another took it, or
        its job expired) is not written: its result is somebody else's to give."""
        if not finished:
            return {}
        now = time.time()
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        async with self._db().begin() as conn:
            for f in finished:
                hit = (await conn.execute(update(items).where(
                    items.c.id == f.item_id, items.c.claimed_by == worker, items.c.status == ItemStatus.RUNNING.value)
                    .values(status=f.status.value, result=f.result.dump(), finished_at=now, lease_until=None))).rowcount
                if hit:
                    c = counts[f.job_id]
                    c[f.status.value] += 1
                    c["prompt_tokens"] += f.prompt_tokens
                    c["completion_tokens"] += f.completion_tokens
            for job_id in sorted(counts):  # one lock order for every writer: no deadlocks between replicas
                c = counts[job_id]
                await conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                    completed=jobs.c.completed + c[ItemStatus.COMPLETED.value],
                    failed=jobs.c.failed + c[ItemStatus.FAILED.value],
                    cancelled=jobs.c.cancelled + c[ItemStatus.CANCELLED.value],
                    prompt_tokens=jobs.c.prompt_tokens + c["prompt_tokens"],
                    completion_tokens=jobs.c.completion_tokens + c["completion_tokens"]))
            await _settle(conn, sorted(counts), now)
        return {s: sum(c[s.value] for c in counts.values()) for s in ItemStatus if any(c[s.value] for c in counts.values())}

    @unbroken
    async def requeue_running(self) -> int:
        """At start-up of a store that belongs to one process (SQLite): items left running by a
        process that died are queued again at once, not after their lease."""
        async with self._db().begin() as conn:
            return (await conn.execute(update(items).where(items.c.status == ItemStatus.RUNNING.value)
                                       .values(status=ItemStatus.QUEUED.value, claimed_by=None, lease_until=None))).rowcount


async def _settle(conn: AsyncConnection, job_ids: Sequence[str], now: float) -> None:
    """Jobs whose items have all ended become final: COMPLETED, or CANCELLED if cancelling."""
    if not job_ids:
        return
    done = jobs.c.completed + jobs.c.failed + jobs.c.cancelled >= jobs.c.total
    await conn.execute(update(jobs).where(
        jobs.c.id.in_(list(job_ids)), done,
        jobs.c.status.in_([*ACTIVE, JobStatus.CANCELLING.value])).values(
        status=case((jobs.c.status == JobStatus.CANCELLING.value, JobStatus.CANCELLED.value),
                    else_=JobStatus.COMPLETED.value),
        finished_at=now))


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _sqlite_setup(engine: AsyncEngine) -> None:
    """WAL (readers never wait for the writer; a commit is one append), a busy timeout, and
    ``BEGIN IMMEDIATE`` for every writing transaction (the driver's own deferred BEGIN is off), so
    that a read that turns into a write never fails on a lock; reads (``_read``) begin deferred,
    so that they take no lock at all."""

    @event.listens_for(engine.sync_engine, "connect")
    def connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")
