"""What the inference service needs of the engine it serves, beyond ``EngineClient``: an engine in
this process, with its tokenizer at hand and each request readable as it runs.

The embedded engine (``inference.engine.async_engine.AsyncEngine``) is one; a remote engine is
not (it has no tokenizer here), so a service cannot be stacked on another by mistake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from .client import EngineClient, MetricsSource, Ticket
from .errors import EngineError
from .request import ChatRequest
from .result import Completion, TokenDelta


class StreamingTicket(Ticket, Protocol):
    """A Ticket whose request can be read as it runs (consuming it, as ``result`` does)."""

    @property
    def seq_ids(self) -> tuple[int, ...]:
        """The engine's id of each of the request's answers (one per ``n``, in order); the first
        also names the request in a stream's chunks."""
        ...

    def events(self) -> AsyncIterator[TokenDelta | Completion]:
        """The request's deltas, then its Completion; raises its EngineError if it fails."""
        ...


class LocalEngine(EngineClient, Protocol):
    @property
    def metrics(self) -> MetricsSource: ...

    async def submit(self, requests: Sequence[ChatRequest]) -> Sequence[StreamingTicket | EngineError]: ...

    async def generate_batch(self, requests: Sequence[ChatRequest],
                             timeout: float | None = None) -> Sequence[Completion | EngineError]:
        """One result per request, in order; a request that fails gets its error in its place."""
        ...

    def tokenize_chat(self, request: ChatRequest) -> list[int]:
        """A chat's prompt ids, chat template included (raises InvalidRequest for a bad request)."""
        ...

    def detokenize(self, ids: Sequence[int], field: str = "tokens") -> str:
        """The text of ``ids``; raises InvalidRequest naming ``field[i]``, the first id outside the vocabulary."""
        ...
