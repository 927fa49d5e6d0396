"""What the API tier needs of an engine, embedded or remote."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from .errors import EngineError
from .info import EngineInfo, EngineStats
from .request import ChatRequest
from .result import Completion, TokenDelta


class Ticket(Protocol):
    """A submitted request. Awaiting ``result`` drains it; ``close`` (or dropping the Ticket
    unconsumed) gives it up, and the engine aborts it."""

    async def result(self, timeout: float | None = None) -> Completion | EngineError: ...

    def close(self) -> None: ...


class EngineClient(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def running(self) -> bool: ...

    def stats(self) -> EngineStats: ...

    def info(self) -> EngineInfo: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]: ...

    async def submit(self, requests: Sequence[ChatRequest]) -> Sequence[Ticket | EngineError]: ...

    async def tokenize(self, text: str) -> list[int]:
        """The model's token ids of ``text`` alone (no chat template), as its prompts count them."""
        ...
