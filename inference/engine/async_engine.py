"""The asyncio face of the engine: a worker thread runs the step loop off the event loop.

Each request gets its own output queue; the worker posts one batch of outputs per step to the
event loop. A stream that is closed or cancelled before its end aborts its sequence, which leaves
the batch at the next step. Admission is bounded: past ``max_running + max_waiting`` outstanding
requests the engine refuses at once with ``Overloaded``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from .. import tracing
from ..boundary import (
    ChatRequest,
    Completion,
    EngineError,
    EngineFault,
    EngineInfo,
    EngineStats,
    EngineStopped,
    FinishReason,
    Overloaded,
    RequestTimeout,
    TokenDelta,
    TokenLogprob,
)
from .llm_engine import LLMEngine, Prepared, StepOutput, engine_info
from .metrics import EngineMetrics

log = logging.getLogger(__name__)
INLINE_PREPARE_CHARS = 4096  # smaller batches are tokenized on the event loop (a thread hop costs more)


class Ticket:
    """A submitted request, owned by whoever holds this object.

    Draining ``events()`` or ``result()`` consumes it. Its request is aborted (it leaves the batch
    at the next step) the moment its owner is gone at whatever point: ``close()``, a cancelled or
    timed-out await, an ``events()`` stream closed early, or the Ticket dropped unconsumed (a
    DataLoader future cancelled before dispatch). The engine keeps this invariant itself, through
    a finalizer, so no caller can leak capacity by forgetting a Ticket."""

    def __init__(self, engine: AsyncEngine, seq_id: int, request_id: str = "") -> None:
        self.engine = engine
        self.seq_id = seq_id
        self.request_id = request_id
        self._release = weakref.finalize(self, engine._forget, seq_id)
        self._release.atexit = False

    def close(self) -> None:
        """Abort the request unless it has already ended; idempotent."""
        self._release()

    async def events(self) -> AsyncIterator[TokenDelta | Completion]:
        """The request's deltas, then its Completion; raises its EngineError if it fails."""
        try:
            async for event in self.engine._events(self.seq_id, self.request_id):
                yield event
        finally:
            self.close()

    async def result(self, timeout: float | None = None) -> Completion | EngineError:
        try:
            async with asyncio.timeout(timeout):
                async for event in self.events():
                    if isinstance(event, Completion):
                        return event
        except EngineError as exc:
            return exc
        except TimeoutError:
            return RequestTimeout(f"the request exceeded its deadline of {timeout:g} s")
        finally:
            self.close()
        return EngineFault("the stream ended without a result")


async def _result(entry: Ticket | EngineError, timeout: float | None) -> Completion | EngineError:
    return entry if isinstance(entry, EngineError) else await entry.result(timeout)


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.capacity = engine.config.max_running + engine.config.max_waiting
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._queues: dict[int, asyncio.Queue[StepOutput]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reserved = 0
        self._published = EngineStats()
        self._info = engine_info(engine)
        self.metrics = EngineMetrics(self.stats, self._info)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="engine-step-loop", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the step loop; every request still open ends with EngineStopped."""
        if self._thread is None:
            return
        self._inbox.put(("stop", None))
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._fail_open_streams(EngineStopped("the engine stopped"))

    def info(self) -> EngineInfo:
        return self._info

    def stats(self) -> EngineStats:
        """The snapshot the step loop last published (one immutable object, swapped whole)."""
        return self._published

    def _publish(self) -> None:
        """Step-loop thread only: what running, waiting and the counters are now."""
        c, scheduler = self.engine.stats, self.engine.scheduler
        blocks = scheduler.blocks.stats()
        self._published = EngineStats(
            running=len(scheduler.running), waiting=len(scheduler.waiting), steps=c.steps,
            tokens_generated=c.tokens_generated, prompt_tokens=c.prompt_tokens,
            cached_prompt_tokens=c.cached_prompt_tokens, last_batch_size=c.last_batch_size,
            kv_blocks_total=blocks.total, kv_blocks_used=blocks.used, kv_blocks_cached=blocks.cached,
            preemptions=scheduler.preemptions)

    # --- the ways in; all go through submit() and _events() ------------------------------

    async def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]:
        """Yield text deltas, then the Completion. Raises an EngineError if the request fails."""
        [entry] = await self.submit([request])
        if isinstance(entry, EngineError):
            raise entry
        async for event in entry.events():
            yield event

    async def generate(self, request: ChatRequest, timeout: float | None = None) -> Completion:
        """The whole answer: the stream, drained."""
        result = (await self.generate_batch([request], timeout))[0]
        if isinstance(result, EngineError):
            raise result
        return result

    async def generate_batch(self, requests: Sequence[ChatRequest],
                             timeout: float | None = None) -> list[Completion | EngineError]:
        """One result per request, in order; a failed request gets its error in its place."""
        tickets = await self.submit(requests)
        try:
            return list(await asyncio.gather(*(_result(t, timeout) for t in tickets)))
        finally:  # cancelled: abort now, not whenever the tickets are collected
            for t in tickets:
                if isinstance(t, Ticket):
                    t.close()

    async def submit(self, requests: Sequence[ChatRequest]) -> list[Ticket | EngineError]:
        """Check each request, reserve capacity for the valid ones (past it: Overloaded), tokenize
        them (in a worker thread when large, so the event loop keeps serving), then hand them to
        the step loop in one message: they are prefilled together at the next step. Returns a
        Ticket or the error, per request; preparing one request can fail only that request."""
        if not self.running:
            return [EngineStopped("the engine is not running") for _ in requests]
        entries: list[Ticket | EngineError | None] = [self._check(r) for r in requests]
        admitted = [i for i, e in enumerate(entries) if e is None]
        free = max(0, self.capacity - len(self._queues) - self._reserved)
        for i in admitted[free:]:
            entries[i] = Overloaded(
                f"the engine is at capacity ({self.capacity} requests: {self.engine.config.max_running} "
                f"running, {self.engine.config.max_waiting} waiting); retry later")
        admitted = admitted[:free]
        self._reserved += len(admitted)  # held while tokenizing, so concurrent submits cannot overshoot
        try:
            todo = [requests[i] for i in admitted]
            small = sum(len(m.content) for r in todo for m in r.messages) <= INLINE_PREPARE_CHARS
            prepared_all = self._prepare_each(todo) if small else await asyncio.to_thread(self._prepare_each, todo)
        finally:
            self._reserved -= len(admitted)
        batch: list[tuple[int, Prepared]] = []
        for i, prepared in zip(admitted, prepared_all, strict=True):
            if isinstance(prepared, EngineError):
                entries[i] = prepared
                continue
            seq_id = next(self._ids)
            self._queues[seq_id] = asyncio.Queue()
            batch.append((seq_id, prepared))
            entries[i] = Ticket(self, seq_id, requests[i].request_id)
        if batch:
            self._inbox.put(("add", batch))
        return entries  # type: ignore[return-value]  # every entry is filled

    # --- internals -----------------------------------------------------------------------------

    def _check(self, request: ChatRequest) -> EngineError | None:
        """The cheap checks (options, roles, text), before capacity is spent on tokenizing."""
        try:
            request.validate(self.engine.config.max_new_tokens_cap)
        except EngineError as exc:
            return exc
        except Exception as exc:
            log.exception("could not check request %s", request.request_id)
            return EngineFault(f"the request could not be checked: {type(exc).__name__}")
        return None

    def _prepare_each(self, requests: Sequence[ChatRequest]) -> list[Prepared | EngineError]:
        out: list[Prepared | EngineError] = []
        for request in requests:
            try:
                out.append(self.engine.prepare(request))
            except EngineError as exc:
                out.append(exc)
            except Exception as exc:
                log.exception("could not prepare request %s", request.request_id)
                out.append(EngineFault(f"the request could not be prepared: {type(exc).__name__}"))
        return out

    def _forget(self, seq_id: int) -> None:
        """The request's owner is gone: free its capacity and abort it. Any thread (a finalizer)."""
        if self._queues.pop(seq_id, None) is not None:
            self._inbox.put(("abort", seq_id))

    async def _events(self, seq_id: int, request_id: str = "") -> AsyncIterator[TokenDelta | Completion]:
        """The request's deltas, then its Completion (or its error raised). Its trace span (when
        tracing is on) is recorded at the end, in the consumer's context: a child of its caller's span."""
        q = self._queues.get(seq_id)
        if q is None:
            raise EngineFault("the request was already closed")
        began = time.time_ns()
        index = tokens = streamed = 0
        pending: tuple[TokenLogprob, ...] = ()
        result: Completion | EngineError | None = None
        try:
            while True:
                out = await q.get()
                tokens += out.error is None
                # A consumer slower than the steps (many streams on a busy server) finds several
                # outputs waiting: their text goes out as one delta, so it catches up instead of
                # paying per token for serializing and sending.
                pending += out.logprobs
                while out.error is None and out.completion is None and not q.empty():
                    later = q.get_nowait()
                    tokens += later.error is None
                    pending += later.logprobs
                    out = StepOutput(seq_id, out.delta + later.delta, later.completion, later.error)
                if out.error is not None or out.completion is not None:
                    self._queues.pop(seq_id, None)  # finished: nothing to abort, and capacity is free now
                if out.delta:  # a token that holds no whole character yet waits, with its logprob, for the next
                    yield TokenDelta(index, out.delta, tokens, pending)
                    streamed += tokens
                    index, tokens, pending = index + 1, 0, ()
                if out.error is not None:
                    result = out.error
                    raise out.error
                if out.completion is not None:
                    result = out.completion
                    self.metrics.observe(out.completion)
                    yield out.completion
                    return
        finally:
            tracing.record_request(began, request_id, result, streamed)

    def _work(self) -> None:
        """The step loop (worker thread): take commands, step, post outputs to the event loop."""
        while True:
            try:
                if self._take_commands(block=not self.engine.has_work()):
                    return
                before = replace(self.engine.stats)
                outputs = self.engine.step()
                if self.engine.stats.steps != before.steps:
                    self.metrics.observe_step(before, self.engine.stats)
            except Exception:
                log.exception("engine loop error")
                outputs = self.engine.fail_all(EngineFault("the engine loop failed"))
            self._publish()
            if outputs:
                assert self._loop is not None  # set by start(), before this thread runs
                self._loop.call_soon_threadsafe(self._dispatch, outputs)

    def _take_commands(self, block: bool) -> bool:
        """Apply queued commands; True when told to stop."""
        while True:
            try:
                cmd, arg = self._inbox.get(block=block)
            except queue.Empty:
                self._publish()
                return False
            block = False
            if cmd == "stop":
                return True
            if cmd == "add":
                for seq_id, prepared in arg:
                    self.engine.add(prepared, seq_id)
            elif cmd == "abort" and self.engine.abort(seq_id=arg) is not None:
                self.metrics.finished.labels(FinishReason.CANCELLED.value).inc()

    def _dispatch(self, outputs: list[StepOutput]) -> None:
        for out in outputs:
            if out.error is not None:
                self.metrics.finished.labels(FinishReason.ERROR.value).inc()
            q = self._queues.get(out.seq_id)
            if q is not None:
                q.put_nowait(out)

    def _fail_open_streams(self, error: EngineError) -> None:
        for seq_id, q in list(self._queues.items()):
            q.put_nowait(StepOutput(seq_id, error=error))
