"""The app's engine, which may still be loading: until it is there, chats get UNAVAILABLE."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from inference.boundary import (
    ChatRequest,
    Completion,
    EngineClient,
    EngineError,
    EngineInfo,
    EngineStats,
    MetricsSource,
    Ticket,
    TokenDelta,
    Unavailable,
)

LOADING = EngineInfo(name="loading")


class EngineHandle:
    """Forwards to ``target`` once it is set. Contexts keep this handle (a WebSocket's context
    lives as long as its connection), so they see the engine as soon as it is loaded."""

    def __init__(self, target: EngineClient | None = None) -> None:
        self.target = target
        self.failure: str | None = None  # why loading failed, if it did

    @property
    def loading(self) -> bool:
        return self.target is None and self.failure is None

    @property
    def running(self) -> bool:
        return self.target is not None and self.target.running

    @property
    def metrics(self) -> MetricsSource | None:
        return self.target.metrics if self.target is not None else None

    def stats(self) -> EngineStats:
        return self.target.stats() if self.target is not None else EngineStats()

    def info(self) -> EngineInfo:
        return self.target.info() if self.target is not None else LOADING

    async def submit(self, requests: Sequence[ChatRequest]) -> Sequence[Ticket | EngineError]:
        if self.target is None:
            return [self._not_ready() for _ in requests]
        return await self.target.submit(requests)

    async def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]:
        if self.target is None:
            raise self._not_ready()
        async for event in self.target.stream(request):
            yield event

    async def tokenize(self, text: str) -> list[int]:
        if self.target is None:
            raise self._not_ready()
        return await self.target.tokenize(text)

    async def start(self) -> None:
        if self.target is not None and not self.target.running:
            await self.target.start()

    async def stop(self) -> None:
        if self.target is not None:
            await self.target.stop()

    def _not_ready(self) -> Unavailable:
        if self.failure:
            return Unavailable(f"the engine could not be loaded: {self.failure}")
        return Unavailable("the model is still loading; retry in a few seconds")
