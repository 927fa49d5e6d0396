"""The DataLoader that turns chats submitted in the same event-loop tick into one engine call."""

from __future__ import annotations

from collections.abc import Sequence

from aiodataloader import DataLoader

from inference.boundary import ChatRequest, EngineClient, EngineError, Ticket


class ChatLoader(DataLoader[ChatRequest, Ticket | EngineError]):
    """One loader per engine, caching off: it outlives operations so that chats from a
    ``chatBatched`` list and from concurrent requests coalesce into one ``engine.submit`` call;
    no result is ever shared. Each caller gets its own Ticket and awaits it, so a caller that
    goes away (client disconnect, deadline) aborts only its own chat. A chat the engine refuses
    raises its EngineError to that caller only."""

    def __init__(self, engine: EngineClient) -> None:
        self.engine = engine
        super().__init__(cache=False)
        self.batch_calls = 0

    @property
    def max_batch_size(self) -> int | None:
        """Follows the limit the engine reports (a remote service's /generate_batch limit), read
        at each dispatch: more chats in one tick go as several calls, never one over the limit."""
        return self.engine.info().max_batch_items or None

    @max_batch_size.setter
    def max_batch_size(self, value: int | None) -> None:
        pass  # DataLoader's constructor sets it; the engine's limit rules

    async def batch_load_fn(self, requests: Sequence[ChatRequest]) -> list[Ticket | EngineError]:
        """A caller cancelled before or during this dispatch never receives its Ticket: the
        Ticket is dropped here, and dropping a Ticket aborts its request (see ``Ticket``)."""
        self.batch_calls += 1
        return list(await self.engine.submit(list(requests)))
