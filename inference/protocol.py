"""What the API layer needs of an engine, embedded or remote."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from .async_engine import Ticket, TokenDelta
from .engine import Completion, EngineInfo, EngineStats
from .errors import EngineError
from .params import ChatRequest


class EngineClient(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def running(self) -> bool: ...

    def stats(self) -> EngineStats: ...

    def info(self) -> EngineInfo: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]: ...

    async def submit(self, requests: Sequence[ChatRequest]) -> list[Ticket | EngineError]: ...
