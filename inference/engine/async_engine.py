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

from http_common import tracing

from ..boundary import (
    ChatRequest,
    Choice,
    Completion,
    EngineError,
    EngineFault,
    EngineInfo,
    EngineStats,
    EngineStopped,
    FinishReason,
    InvalidRequest,
    Overloaded,
    RequestTimeout,
    Timings,
    TokenDelta,
    TokenLogprob,
    Usage,
)
from ..boundary.request import prompt_messages
from .kernels import release_threads
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

    def __init__(self, engine: AsyncEngine, seq_ids: tuple[int, ...], request_id: str = "") -> None:
        self.engine = engine
        self.seq_ids = seq_ids  # one sequence per answer (``n``), the first the parent of the others
        self.request_id = request_id
        self._release = weakref.finalize(self, engine._forget, seq_ids)
        self._release.atexit = False

    def close(self) -> None:
        """Abort the request (each answer still running) unless it has already ended; idempotent."""
        self._release()

    async def events(self) -> AsyncIterator[TokenDelta | Completion]:
        """The request's deltas, then its Completion; raises its EngineError if it fails."""
        try:
            async for event in self.engine._events(self.seq_ids, self.request_id):
                yield event
        finally:
            self.close()

    async def result(self, timeout: float | None = None) -> Completion | EngineError:
        self.engine._final_only.update(self.seq_ids)  # no deltas wanted: the Completion holds the text
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


def combine(answers: list[Completion]) -> Completion:
    """One Completion of a request's answers (each one ended): the first's text and reason on
    top, all of them in ``choices``; the prompt counted once."""
    if len(answers) == 1:
        return answers[0]
    first = answers[0]
    first_tokens = [a.timings.first_token_ms for a in answers if a.timings.first_token_ms is not None]
    return replace(
        first,
        usage=Usage(prompt_tokens=first.usage.prompt_tokens, completion_tokens=sum(a.usage.completion_tokens for a in answers)),
        timings=Timings(queued_ms=first.timings.queued_ms, first_token_ms=min(first_tokens, default=None),
                        total_ms=max(a.timings.total_ms for a in answers)),
        choices=tuple(Choice(index=i, text=a.text, finish_reason=a.finish_reason, logprobs=a.logprobs, tool_calls=a.tool_calls)
                      for i, a in enumerate(answers)),
    )


async def _result(entry: Ticket | EngineError, timeout: float | None) -> Completion | EngineError:
    return entry if isinstance(entry, EngineError) else await entry.result(timeout)


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.capacity = engine.config.max_running + engine.config.max_waiting
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._queues: dict[int, asyncio.Queue[StepOutput]] = {}
        # Sequences whose owner waits for the result alone: the step loop posts only their end, so
        # the event loop does not wake (and take a core from the step's threads) once per token.
        self._final_only: set[int] = set()
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
        release_threads()  # this thread's OpenMP team, if it has one, would halve the step loop's speed
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
        free = max(0, self.capacity - len(self._queues) - self._reserved)
        admitted = []
        for i, entry in enumerate(entries):
            if entry is not None:
                continue
            need = requests[i].params.n  # each answer is a sequence and takes its place
            if need <= free:
                admitted.append(i)
                free -= need
            else:
                entries[i] = Overloaded(
                    f"the engine is at capacity ({self.capacity} requests: {self.engine.config.max_running} "
                    f"running, {self.engine.config.max_waiting} waiting); retry later")
        reserved = sum(requests[i].params.n for i in admitted)
        self._reserved += reserved  # held while tokenizing, so concurrent submits cannot overshoot
        try:
            todo = [requests[i] for i in admitted]
            small = sum(len(m.content) for r in todo for m in r.messages) <= INLINE_PREPARE_CHARS
            prepared_all = self._prepare_each(todo) if small else await asyncio.to_thread(self._prepare_each, todo)
        finally:
            self._reserved -= reserved
        batch: list[tuple[tuple[int, ...], list[Prepared]]] = []
        for i, prepared in zip(admitted, prepared_all, strict=True):
            if isinstance(prepared, EngineError):
                entries[i] = prepared
                continue
            seq_ids = tuple(next(self._ids) for _ in prepared)
            q: asyncio.Queue[StepOutput] = asyncio.Queue()  # one per request: its answers' outputs interleave
            for seq_id in seq_ids:
                self._queues[seq_id] = q
            batch.append((seq_ids, prepared))
            entries[i] = Ticket(self, seq_ids, requests[i].request_id)
        if batch:
            self._inbox.put(("add", batch))
        return entries  # type: ignore[return-value]  # every entry is filled

    async def tokenize(self, text: str) -> list[int]:
        return await self._off_loop(self.engine.prompts.encode_text, text)

    def tokenize_chat(self, request: ChatRequest) -> list[int]:
        """A chat's prompt ids, template included, as the engine would compute them (checked first)."""
        request.validate(self.engine.config.max_new_tokens_cap)
        return self.engine.prompts.encode(prompt_messages(request))

    def detokenize(self, ids: Sequence[int], field: str = "tokens") -> str:
        """Raises InvalidRequest naming the first id outside the vocabulary (``field[i]``)."""
        vocab = self.engine.model.config.vocab_size
        for i, token in enumerate(ids):
            if not 0 <= token < vocab:
                raise InvalidRequest(f"{field}[{i}] must be a token id from 0 to {vocab - 1}, got {token}", field=f"{field}[{i}]")
        return self.engine.tokenizer.decode(list(ids))

    @staticmethod
    async def _off_loop(fn, text: str):
        """Small texts on the event loop (a thread hop costs more); large ones in a worker thread."""
        return fn(text) if len(text) <= INLINE_PREPARE_CHARS else await asyncio.to_thread(fn, text)

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

    def _prepare_each(self, requests: Sequence[ChatRequest]) -> list[list[Prepared] | EngineError]:
        """Per request, its answers prepared (one per ``n``), or its error."""
        out: list[list[Prepared] | EngineError] = []
        for request in requests:
            try:
                out.append(self.engine.answers(self.engine.prepare(request)))
            except EngineError as exc:
                out.append(exc)
            except Exception as exc:
                log.exception("could not prepare request %s", request.request_id)
                out.append(EngineFault(f"the request could not be prepared: {type(exc).__name__}"))
        return out

    def _forget(self, seq_ids: tuple[int, ...]) -> None:
        """The request's owner is gone: free its capacity and abort each answer still running. Any
        thread (a finalizer)."""
        for seq_id in seq_ids:
            self._final_only.discard(seq_id)
            if self._queues.pop(seq_id, None) is not None:
                self._inbox.put(("abort", seq_id))

    async def _events(self, seq_ids: tuple[int, ...], request_id: str = "") -> AsyncIterator[TokenDelta | Completion]:
        """The request's deltas (``choice`` says whose), then its Completion once every answer has
        ended (or the first error raised; the owner's close then aborts the other answers). Its
        trace span (when tracing is on) is recorded at the end, in the consumer's context: a child
        of its caller's span."""
        q = self._queues.get(seq_ids[0])
        if q is None:
            raise EngineFault("the request was already closed")
        choice_of = {seq_id: c for c, seq_id in enumerate(seq_ids)}
        n = len(seq_ids)
        began = time.time_ns()
        streamed = 0
        index, tokens = [0] * n, [0] * n
        texts = [""] * n
        pending: list[tuple[TokenLogprob, ...]] = [()] * n
        done: dict[int, Completion] = {}
        result: Completion | EngineError | None = None
        try:
            while True:
                # A consumer slower than the steps (many streams on a busy server) finds several
                # outputs waiting: each answer's text goes out as one delta, so it catches up instead
                # of paying per token for serializing and sending.
                outs = [await q.get()]
                while not q.empty():
                    outs.append(q.get_nowait())
                for out in outs:
                    c = choice_of[out.seq_id]
                    if out.error is not None or out.completion is not None:
                        self._queues.pop(out.seq_id, None)  # ended: nothing to abort, and its place is free now
                    if out.error is not None:
                        result = out.error
                        raise out.error
                    tokens[c] += 1
                    texts[c] += out.delta
                    pending[c] += out.logprobs
                    if out.completion is not None:
                        done[c] = out.completion
                        self.metrics.observe(out.completion)
                for c in range(n):
                    if texts[c]:  # a token that holds no whole character yet waits, with its logprob, for the next
                        yield TokenDelta(index=index[c], text=texts[c], tokens=tokens[c], logprobs=pending[c], choice=c)
                        streamed += tokens[c]
                        index[c], tokens[c], texts[c], pending[c] = index[c] + 1, 0, "", ()
                if len(done) == n:
                    result = combine([done[c] for c in range(n)])
                    yield result
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
            if self._final_only:
                outputs = [o for o in outputs if o.completion is not None or o.error is not None or o.seq_id not in self._final_only]
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
                for seq_ids, answers in arg:
                    for seq_id, prepared in zip(seq_ids, answers, strict=True):
                        self.engine.add(prepared, seq_id, None if seq_id == seq_ids[0] else seq_ids[0])
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
