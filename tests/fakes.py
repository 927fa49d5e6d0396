"""A deterministic stand-in engine for fast API-shape tests (never for claims about the model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from inference.boundary import (
    ChatRequest,
    Completion,
    EngineError,
    EngineInfo,
    EngineStats,
    FinishReason,
    Timings,
    TokenDelta,
    Usage,
)


class FakeTicket:
    def __init__(self, completion: Completion) -> None:
        self.completion = completion

    async def result(self, timeout: float | None = None) -> Completion:
        await asyncio.sleep(0)
        return self.completion

    def close(self) -> None:
        pass


class FakeEngine:
    """Answers "echo: <prompt>" word by word; validates options like the real engine."""

    max_new_tokens_cap = 1024
    metrics = None  # no Prometheus series of its own

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.batch_calls: list[int] = []
        self.fail_with = fail_with
        self.open_streams = 0
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def stats(self) -> EngineStats:
        return EngineStats(running=self.open_streams)

    def info(self) -> EngineInfo:
        return EngineInfo(name="fake", parameters=1, context_length=2048, device="cpu", dtype="float32",
                          max_new_tokens_cap=self.max_new_tokens_cap, default_max_new_tokens=256, max_running=64, max_waiting=256)

    def _answer(self, request: ChatRequest) -> Completion | EngineError:
        try:
            request.validate(self.max_new_tokens_cap)
        except EngineError as exc:
            return exc
        text = "echo: " + request.messages[-1].content
        return Completion(request_id=request.request_id, text=text, finish_reason=FinishReason.STOP,
                          usage=Usage(prompt_tokens=3, completion_tokens=len(text.split())),
                          timings=Timings(queued_ms=0.0, first_token_ms=1.0, total_ms=2.0))

    async def submit(self, requests: Sequence[ChatRequest]) -> list[FakeTicket | EngineError]:
        self.batch_calls.append(len(requests))
        if self.fail_with is not None:
            raise self.fail_with
        answers = [self._answer(r) for r in requests]
        return [a if isinstance(a, EngineError) else FakeTicket(a) for a in answers]


    async def tokenize(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]  # one "token" per word

    async def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]:
        result = self._answer(request)
        if isinstance(result, EngineError):
            raise result
        self.open_streams += 1
        try:
            words = result.text.split(" ")
            for i, word in enumerate(words):
                await asyncio.sleep(0.01)
                yield TokenDelta(index=i, text=word if i == 0 else " " + word)
            yield result
        finally:
            self.open_streams -= 1
