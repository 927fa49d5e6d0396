"""The DataLoader that turns chats submitted in the same event-loop tick into one engine call."""

from __future__ import annotations

from collections.abc import Sequence

from aiodataloader import DataLoader

from inference.async_engine import Ticket
from inference.errors import EngineError
from inference.params import ChatRequest
from inference.protocol import EngineClient


class ChatLoader(DataLoader[ChatRequest, Ticket]):
    """One loader per engine, caching off: it outlives operations so that chats from a
    ``chatBatched`` list and from concurrent requests coalesce into one ``engine.submit`` call;
    no result is ever shared. Each caller gets its own Ticket and awaits it, so a caller that
    goes away (client disconnect, deadline) aborts only its own chat. A chat the engine refuses
    raises its EngineError to that caller only."""

    def __init__(self, engine: EngineClient, max_batch_size: int | None = None) -> None:
        super().__init__(cache=False, max_batch_size=max_batch_size)
        self.engine = engine
        self.batch_calls = 0

    async def batch_load_fn(self, requests: Sequence[ChatRequest]) -> list[Ticket | EngineError]:
        """A caller cancelled before or during this dispatch never receives its Ticket: the
        Ticket is dropped here, and dropping a Ticket aborts its request (see ``Ticket``)."""
        self.batch_calls += 1
        return await self.engine.submit(list(requests))
