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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from .engine import Completion, EngineInfo, EngineStats, LLMEngine, Prepared, StepOutput, engine_info
from .errors import EngineError, EngineFault, EngineStopped, Overloaded, RequestTimeout
from .metrics import EngineMetrics
from .params import ChatRequest

log = logging.getLogger(__name__)


class Ticket:
    """A submitted request. Awaiting ``result()`` drains it; cancelling that await, or its
    deadline passing, aborts the sequence (it leaves the batch at the next step)."""

    def __init__(self, engine: AsyncEngine, seq_id: int) -> None:
        self.engine = engine
        self.seq_id = seq_id

    def events(self) -> AsyncIterator[TokenDelta | Completion]:
        """The request's deltas, then its Completion; raises its EngineError if it fails."""
        return self.engine._events(self.seq_id)

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
        return EngineFault("the stream ended without a result")


async def _result(entry: Ticket | EngineError, timeout: float | None) -> Completion | EngineError:
    return entry if isinstance(entry, EngineError) else await entry.result(timeout)


@dataclass(frozen=True)
class TokenDelta:
    """A piece of text from a stream; ``index`` counts the deltas of that request from 0."""

    index: int
    text: str


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.capacity = engine.config.max_running + engine.config.max_waiting
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._queues: dict[int, asyncio.Queue[StepOutput]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info = engine_info(engine)
        self.metrics = EngineMetrics(self.stats)

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
        s = self.engine.stats
        running = len(self.engine.scheduler.running)
        return replace(s, running=running, waiting=max(0, len(self._queues) - running))

    # --- the ways in; all go through submit() and _events() ------------------------------

    async def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]:
        """Yield text deltas, then the Completion. Raises an EngineError if the request fails."""
        [entry] = self.submit([request])
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
        tickets = self.submit(requests)
        return list(await asyncio.gather(*(_result(t, timeout) for t in tickets)))

    def submit(self, requests: Sequence[ChatRequest]) -> list[Ticket | EngineError]:
        """Validate each request and hand the valid ones to the step loop in one message: they
        are prefilled together at the next step. Returns a Ticket or the error, per request."""
        if not self.running:
            return [EngineStopped("the engine is not running") for _ in requests]
        entries: list[Ticket | EngineError] = []
        batch: list[tuple[int, Prepared]] = []
        for request in requests:
            try:
                prepared = self.engine.prepare(request)
            except EngineError as exc:
                entries.append(exc)
                continue
            if len(self._queues) >= self.capacity:
                entries.append(Overloaded(
                    f"the engine is at capacity ({self.capacity} requests: "
                    f"{self.engine.config.max_running} running, {self.engine.config.max_waiting} waiting); retry later"))
                continue
            seq_id = next(self._ids)
            self._queues[seq_id] = asyncio.Queue()
            batch.append((seq_id, prepared))
            entries.append(Ticket(self, seq_id))
        if batch:
            self._inbox.put(("add", batch))
        return entries

    # --- internals -----------------------------------------------------------------------------

    async def _events(self, seq_id: int) -> AsyncIterator[TokenDelta | Completion]:
        """The request's deltas, then its Completion (or its error raised). Leaving early, by
        close or cancellation, aborts the sequence."""
        q = self._queues[seq_id]
        index = 0
        try:
            while True:
                out = await q.get()
                if out.error is not None or out.completion is not None:
                    del self._queues[seq_id]  # finished: nothing to abort, and capacity is free now
                if out.delta:
                    yield TokenDelta(index, out.delta)
                    index += 1
                if out.error is not None:
                    raise out.error
                if out.completion is not None:
                    self.metrics.observe(out.completion)
                    yield out.completion
                    return
        finally:
            if self._queues.pop(seq_id, None) is not None:
                self._inbox.put(("abort", seq_id))

    def _work(self) -> None:
        """The step loop (worker thread): take commands, step, post outputs to the event loop."""
        while True:
            try:
                if self._take_commands(block=not self.engine.has_work()):
                    return
                steps = self.engine.stats.steps
                outputs = self.engine.step()
                if self.engine.stats.steps != steps:
                    self.metrics.observe_step(self.engine.stats.last_batch_size)
            except Exception:  # noqa: BLE001 - the loop must survive; its requests must not hang
                log.exception("engine loop error")
                outputs = self.engine.fail_all(EngineFault("the engine loop failed"))
            if outputs:
                self._loop.call_soon_threadsafe(self._dispatch, outputs)

    def _take_commands(self, block: bool) -> bool:
        """Apply queued commands; True when told to stop."""
        while True:
            try:
                cmd, arg = self._inbox.get(block=block)
            except queue.Empty:
                return False
            block = False
            if cmd == "stop":
                return True
            if cmd == "add":
                for seq_id, prepared in arg:
                    self.engine.add(prepared, seq_id)
            elif cmd == "abort":
                self.engine.abort(seq_id=arg)

    def _dispatch(self, outputs: list[StepOutput]) -> None:
        for out in outputs:
            q = self._queues.get(out.seq_id)
            if q is not None:
                q.put_nowait(out)

    def _fail_open_streams(self, error: EngineError) -> None:
        for seq_id, q in list(self._queues.items()):
            q.put_nowait(StepOutput(seq_id, error=error))
