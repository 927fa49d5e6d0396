"""Batch jobs in GraphQL: submitBatchJob, cancelBatchJob, batchJob, batchJobs, batchJobProgress.

A job belongs to the API key that submitted it: other keys neither see nor cancel it (to them it
does not exist). Results are the same ``ChatResult`` union as ``chat``'s, keyed by ``chatId`` =
the item's ``custom_id`` (or ``chatId`` for inline items), as cursor connections.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry import ID
from strawberry.file_uploads import Upload
from strawberry.scalars import JSON
from strawberry.types import Info

from inference.boundary import EngineError, ErrorCode, UpstreamError
from inference.boundary.formats import nesting
from inference.boundary.options import MAX_NEW_TOKENS_CAP
from inference.boundary.request import encodable

from ..jobs.intake import Checker, file_items
from ..jobs.service import Jobs
from ..jobs.store import JOB_ID, ItemResult, Job, NewItem
from ..jobs.tables import JobStatus
from .chats import echo_id, success, to_request
from .context import Context
from .errors import chat_error
from .types import ChatError, ChatInput, ChatResult, Usage

strawberry.enum(JobStatus, name="BatchJobStatus", description="Where a batch job is in its life.")

MAX_METADATA_BYTES = 16_384
MAX_METADATA_DEPTH = 32
MAX_POSITION = 2**31  # an item's position in its job is a 32-bit integer in the database
MAX_TIME = 1e11  # UNIX seconds (the year 5138): any later is no job's
MAX_PAGE = {"results": 1000, "batchJobs": 100}
PROGRESS_POLL_S = 0.5  # batchJobProgress: at most two updates a second


class JobRequestError(GraphQLError):
    """A job operation refused as a whole; ``code`` in extensions, with what it names."""

    def __init__(self, code: str, message: str, **extensions: object) -> None:
        super().__init__(message, extensions={"code": code, **extensions})


def not_found(job_id: str) -> JobRequestError:
    shown = encodable(job_id[:64])
    return JobRequestError("JOB_NOT_FOUND", f"no batch job with id {shown!r} (for this API key)", id=shown)


@strawberry.type(description="How many items a job has, and how many ended how.")
class BatchJobCounts:
    total: int
    completed: int = strawberry.field(description="Ended with an answer.")
    failed: int = strawberry.field(description="Ended with an error (refused lines included).")
    cancelled: int = strawberry.field(description="Cancelled, or expired, before they ended.")


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class ChatResultEdge:
    cursor: str
    node: ChatResult


@strawberry.type(description="Ended items in input order.")
class ChatResultConnection:
    edges: list[ChatResultEdge]
    page_info: PageInfo


@strawberry.type(description="A batch job: items run in the engine's spare capacity, results kept in the database.")
class BatchJob:
    id: ID
    status: JobStatus
    metadata: JSON | None
    counts: BatchJobCounts
    usage: Usage = strawberry.field(description="Tokens of the items that ended so far.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None = strawberry.field(description="When it became COMPLETED, FAILED, CANCELLED or EXPIRED.")
    cancelled_at: datetime | None
    expires_at: datetime = strawberry.field(description="Items not ended by then are not run (JOB_COMPLETION_WINDOW).")
    error: str | None = strawberry.field(description="Why a FAILED job's input was refused.")
    results_url: str = strawberry.field(description="Its results in OpenAI's batch output format (JSONL).")

    @strawberry.field(description="Ended items, in input order (at most 1000 per page).")
    async def results(self, info: Info[Context, None], first: int = 100, after: str | None = None) -> ChatResultConnection:
        check_page("results", first)
        after_idx = results_cursor(after) if after else -1
        rows = await jobs_of(info).store.results(str(self.id), first + 1, after_idx)
        page = rows[:first]
        edges = [ChatResultEdge(cursor=encode_cursor("results", r.idx), node=chat_result(r)) for r in page]
        return ChatResultConnection(edges=edges, page_info=PageInfo(
            has_next_page=len(rows) > first, end_cursor=edges[-1].cursor if edges else after))

    @classmethod
    def of(cls, job: Job) -> BatchJob:
        when = lambda t: None if t is None else datetime.fromtimestamp(t, UTC)
        return cls(id=ID(job.id), status=job.status, metadata=job.metadata,
                   counts=BatchJobCounts(total=job.total, completed=job.completed, failed=job.failed, cancelled=job.cancelled),
                   usage=Usage(prompt_tokens=job.prompt_tokens, completion_tokens=job.completion_tokens,
                               total_tokens=job.prompt_tokens + job.completion_tokens),
                   created_at=datetime.fromtimestamp(job.created_at, UTC), started_at=when(job.started_at),
                   finished_at=when(job.finished_at), cancelled_at=when(job.cancelled_at),
                   expires_at=datetime.fromtimestamp(job.expires_at, UTC), error=job.error,
                   results_url=f"/jobs/{job.id}/results.jsonl")


@strawberry.type
class BatchJobEdge:
    cursor: str
    node: BatchJob


@strawberry.type(description="The caller's jobs, newest first.")
class BatchJobConnection:
    edges: list[BatchJobEdge]
    page_info: PageInfo


@strawberry.input(description="Either items, or file: a JSONL upload in OpenAI's batch format (one "
                              '{"custom_id", "body": {"messages", "max_tokens", ...}} per line).')
class BatchJobInput:
    items: list[ChatInput] | None = None
    file: Upload | None = None
    metadata: JSON | None = strawberry.field(default=None, description="Kept with the job, as given (16 KiB at most).")


def chat_result(r: ItemResult) -> ChatResult:
    error = r.result.error
    if error is not None:
        return ChatError(chat_id=ID(r.custom_id), code=ErrorCode.parse(error.code), message=error.message, field=error.field)
    return success(r.custom_id, r.result.completion(r.custom_id))


def encode_cursor(kind: str, *key: object) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, *key]).encode()).decode()


MAX_CURSOR_CHARS = 512


def decode_cursor(cursor: str, kind: str) -> list[Any]:
    """The key a cursor of ``kind`` holds; anything else (not base64, not JSON, nested too deeply,
    of another kind) is INVALID_INPUT naming ``after``."""
    try:
        if len(cursor) <= MAX_CURSOR_CHARS:
            value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            if isinstance(value, list) and len(value) > 1 and value[0] == kind:
                return value[1:]
    except (ValueError, RecursionError):  # UnicodeError and binascii.Error are ValueErrors
        pass
    raise bad_cursor(cursor, kind)


def bad_cursor(cursor: str, kind: str) -> JobRequestError:
    return JobRequestError("INVALID_INPUT", f"after: {encodable(cursor[:64])!r} is not a cursor of {kind}", field="after")


def results_cursor(cursor: str) -> int:
    """The input position a ``results`` cursor holds: an integer in the range positions take."""
    key = decode_cursor(cursor, "results")
    if len(key) == 1 and type(key[0]) is int and 0 <= key[0] < MAX_POSITION:
        return key[0]
    raise bad_cursor(cursor, "results")


def jobs_cursor(cursor: str) -> tuple[float, str]:
    """The (created_at, id) a ``batchJobs`` cursor holds: a finite time and a job id as the store makes them."""
    key = decode_cursor(cursor, "batchJobs")
    if (len(key) == 2 and type(key[0]) in (int, float) and math.isfinite(key[0]) and 0 <= key[0] < MAX_TIME
            and isinstance(key[1], str) and JOB_ID.fullmatch(key[1])):
        return float(key[0]), key[1]
    raise bad_cursor(cursor, "batchJobs")


def check_metadata(metadata: object) -> None:
    """Metadata is kept as JSON: a JSON value (an upload mapped into it is not), at most
    ``MAX_METADATA_DEPTH`` deep and ``MAX_METADATA_BYTES`` long."""
    if metadata is None:
        return
    if nesting(metadata, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise JobRequestError("INVALID_INPUT", f"metadata nests objects and arrays more than {MAX_METADATA_DEPTH} deep",
                              field="metadata", limit=MAX_METADATA_DEPTH)
    try:
        size = len(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError):
        raise JobRequestError("INVALID_INPUT", "metadata must be a JSON value (a file cannot be metadata)",
                              field="metadata") from None
    if size > MAX_METADATA_BYTES:
        raise JobRequestError("INVALID_INPUT", f"metadata is over {MAX_METADATA_BYTES} bytes as JSON", field="metadata",
                              limit=MAX_METADATA_BYTES)


def check_page(field: str, first: int) -> None:
    if not 1 <= first <= MAX_PAGE[field]:
        raise JobRequestError("INVALID_INPUT", f"first must be between 1 and {MAX_PAGE[field]}, got {first}",
                              field="first", limit=MAX_PAGE[field])


def jobs_of(info: Info[Context, None]) -> Jobs:
    jobs = info.context.jobs
    if jobs is None or not jobs.ready:
        raise JobRequestError("UNAVAILABLE", "batch jobs are not available yet (the jobs database is starting)")
    return jobs


def inline_items(ctx: Context, inputs: Sequence[ChatInput], checker: Checker) -> list[NewItem]:
    """Each ChatInput checked as ``chat`` checks it, then its options against the engine's limits."""
    out = []
    for item in inputs:
        chat_id = echo_id(item.chat_id, ctx.settings)
        request = to_request(item, ctx.settings, "")
        if not isinstance(request, ChatError):
            try:
                request.validate(checker.max_new_tokens_cap)
            except EngineError as exc:
                request = chat_error(chat_id, exc)
        if isinstance(request, ChatError):
            out.append(checker.refuse(chat_id, UpstreamError(request.code, request.message, request.field)))
        else:
            out.append(checker.request(chat_id, request, "chatId"))
    return out


async def _chunked(items: list[NewItem], size: int = 1000) -> AsyncIterator[list[NewItem]]:
    for at in range(0, len(items), size):
        yield items[at:at + size]


@strawberry.type
class JobQuery:
    @strawberry.field(description="One of the caller's batch jobs; an unknown id is the error JOB_NOT_FOUND.")
    async def batch_job(self, info: Info[Context, None], id: ID) -> BatchJob:
        job = await jobs_of(info).store.job(str(id), info.context.caller.name)
        if job is None:
            raise not_found(str(id))
        return BatchJob.of(job)

    @strawberry.field(description="The caller's batch jobs, newest first (at most 100 per page).")
    async def batch_jobs(self, info: Info[Context, None], first: int = 20, after: str | None = None) -> BatchJobConnection:
        check_page("batchJobs", first)
        key = jobs_cursor(after) if after else None
        rows = await jobs_of(info).store.jobs(info.context.caller.name, first + 1, key)
        edges = [BatchJobEdge(cursor=encode_cursor("batchJobs", j.created_at, j.id), node=BatchJob.of(j)) for j in rows[:first]]
        return BatchJobConnection(edges=edges, page_info=PageInfo(has_next_page=len(rows) > first,
                                                                  end_cursor=edges[-1].cursor if edges else after))


@strawberry.type
class JobMutation:
    @strawberry.mutation(description="Submit a batch job: items inline, or a JSONL file (multipart upload). Every item "
                                     "is checked now; a bad one becomes a failed item, the others run.")
    async def submit_batch_job(self, info: Info[Context, None], input: BatchJobInput) -> BatchJob:
        ctx = info.context
        jobs = jobs_of(info)
        if (input.items is None) == (input.file is None):
            raise JobRequestError("INVALID_INPUT", "give either items or file, not both and not neither", field="input")
        check_metadata(input.metadata)
        if ctx.draining():
            raise JobRequestError("UNAVAILABLE", "the server is shutting down; submit to another replica")
        checker = jobs.checker(ctx.engine.info().max_new_tokens_cap or MAX_NEW_TOKENS_CAP)
        if input.items is not None:
            limit = ctx.settings.max_job_items
            if len(input.items) > limit:
                raise JobRequestError("JOB_TOO_LARGE", f"a job takes at most {limit} items, got {len(input.items)} "
                                      "(MAX_JOB_ITEMS)", limit=limit, size=len(input.items))
            chunks = _chunked(inline_items(ctx, input.items, checker))
        else:
            chunks = file_items(input.file, checker, ctx.settings.max_body_bytes)  # type: ignore[arg-type]  # an UploadFile
        return BatchJob.of(await jobs.submit(ctx.caller.name, chunks, input.metadata))

    @strawberry.mutation(description="Cancel a job: items not started are cancelled, running ones aborted, ended ones "
                                     "kept. The job is CANCELLING until none runs, then CANCELLED.")
    async def cancel_batch_job(self, info: Info[Context, None], id: ID) -> BatchJob:
        job = await jobs_of(info).cancel(str(id), info.context.caller.name)
        if job is None:
            raise not_found(str(id))
        return BatchJob.of(job)


@strawberry.type
class JobSubscription:
    @strawberry.subscription(description="The job now, then each time its status or counts change (at most twice a "
                                         "second), until it is final.")
    async def batch_job_progress(self, info: Info[Context, None], id: ID) -> AsyncGenerator[BatchJob, None]:
        store = jobs_of(info).store
        owner = info.context.caller.name
        last = None
        while True:
            job = await store.job(str(id), owner)
            if job is None:
                raise not_found(str(id))
            seen = (job.status, job.completed, job.failed, job.cancelled)
            if seen != last:
                last = seen
                yield BatchJob.of(job)
            if job.status.final:
                return
            await asyncio.sleep(PROGRESS_POLL_S)
