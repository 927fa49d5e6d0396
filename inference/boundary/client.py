"""What the API tier needs of an engine, embedded or remote."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol

from .errors import EngineError
from .info import EngineInfo, EngineStats
from .request import ChatRequest
from .result import Completion, TokenDelta

if TYPE_CHECKING:  # a type only: the boundary imports nothing past the standard library at run time
    from prometheus_client import CollectorRegistry


class Ticket(Protocol):
    """A submitted request. Awaiting ``result`` drains it; ``close`` (or dropping the Ticket
    unconsumed) gives it up, and the engine aborts it."""

    async def result(self, timeout: float | None = None) -> Completion | EngineError: ...

    def close(self) -> None: ...


class MetricsSource(Protocol):
    """An engine's own Prometheus series (KV pool, batch sizes, latencies), in its own registry."""

    @property
    def registry(self) -> CollectorRegistry: ...


class EngineClient(Protocol):
    """An engine as a client of it sees it: in this process or behind HTTP, the same calls and
    the same errors (an EngineError per request, never a transport's exception)."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop; requests still open end with an EngineError."""
        ...

    @property
    def running(self) -> bool:
        """Whether it takes requests now (readiness): started and, for a remote one, some upstream
        reachable."""
        ...

    def stats(self) -> EngineStats:
        """How busy it is, without waiting for it (a snapshot)."""
        ...

    def info(self) -> EngineInfo:
        """The model and its limits (0 and "" where unknown)."""
        ...

    @property
    def metrics(self) -> MetricsSource | None:
        """Its own Prometheus series, for the caller's ``/metrics`` to add to its own; None where it
        has none here (a remote engine's are at its server's ``/metrics``)."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]: ...

    async def submit(self, requests: Sequence[ChatRequest]) -> Sequence[Ticket | EngineError]: ...

    async def tokenize(self, text: str) -> list[int]:
        """The model's token ids of ``text`` alone (no chat template), as its prompts count them."""
        ...
