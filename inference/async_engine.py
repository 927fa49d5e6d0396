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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from .engine import Completion, EngineInfo, EngineStats, LLMEngine, Prepared, StepOutput, engine_info
from .errors import EngineError, EngineFault, EngineStopped, Overloaded
from .params import ChatRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenDelta:
    """A piece of text from a stream; ``index`` counts the deltas of that request from 0."""

    index: int
    text: str


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.capacity = engine.config.max_running + engine.config.max_waiting
        self.started_at = time.time()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._queues: dict[int, asyncio.Queue[StepOutput]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info = engine_info(engine)

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
        self._fail_all(EngineStopped("the engine stopped"))

    def info(self) -> EngineInfo:
        return self._info

    def stats(self) -> EngineStats:
        s = self.engine.stats
        running = len(self.engine.scheduler.running)
        return replace(s, running=running, waiting=max(0, len(self._queues) - running))

    # --- the three ways in; all go through _submit and _events -----------------------------

    async def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]:
        """Yield text deltas, then the Completion. Raises an EngineError if the request fails."""
        [entry] = self._submit([request])
        if isinstance(entry, EngineError):
            raise entry
        async for event in self._events(entry):
            yield event

    async def generate(self, request: ChatRequest) -> Completion:
        """The whole answer: the stream, drained."""
        result = (await self.generate_batch([request]))[0]
        if isinstance(result, EngineError):
            raise result
        return result

    async def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Completion | EngineError]:
        """One result per request, in order; a failed request gets its error in its place."""
        return list(await asyncio.gather(*(self._drain(e) for e in self._submit(requests))))

    # --- internals -----------------------------------------------------------------------------

    def _submit(self, requests: Sequence[ChatRequest]) -> list[int | EngineError]:
        """Validate each request and hand the valid ones to the worker in one message."""
        if not self.running:
            return [EngineStopped("the engine is not running") for _ in requests]
        entries: list[int | EngineError] = []
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
            entries.append(seq_id)
        if batch:
            self._inbox.put(("add", batch))
        return entries

    async def _drain(self, entry: int | EngineError) -> Completion | EngineError:
        if isinstance(entry, EngineError):
            return entry
        try:
            async for event in self._events(entry):
                if isinstance(event, Completion):
                    return event
        except EngineError as exc:
            return exc
        return EngineFault("the stream ended without a result")

    async def _events(self, seq_id: int) -> AsyncIterator[TokenDelta | Completion]:
        q = self._queues[seq_id]
        index = 0
        done = False
        try:
            while True:
                out = await q.get()
                if out.error is not None:
                    done = True
                    raise out.error
                if out.delta:
                    yield TokenDelta(index, out.delta)
                    index += 1
                if out.completion is not None:
                    done = True
                    yield out.completion
                    return
        finally:
            self._queues.pop(seq_id, None)
            if not done:
                self._inbox.put(("abort", seq_id))

    def _work(self) -> None:
        """The step loop (worker thread): take commands, step, post outputs to the event loop."""
        while True:
            try:
                if self._take_commands(block=not self.engine.has_work()):
                    return
                outputs = self.engine.step()
            except Exception:  # noqa: BLE001 - the loop must survive; its requests must not hang
                log.exception("engine loop error")
                outputs = self._abort_all()
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

    def _abort_all(self) -> list[StepOutput]:
        fault = EngineFault("the engine loop failed")
        outs = [self.engine.abort(seq_id) for seq_id in list(self.engine._seqs)]
        return [StepOutput(o.seq_id, error=fault) for o in outs if o is not None]

    def _dispatch(self, outputs: list[StepOutput]) -> None:
        for out in outputs:
            q = self._queues.get(out.seq_id)
            if q is not None:
                q.put_nowait(out)

    def _fail_all(self, error: EngineError) -> None:
        for seq_id, q in list(self._queues.items()):
            q.put_nowait(StepOutput(seq_id, error=error))
