"""The peer benchmark counts every answer of a concurrent load (no model, no server)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from benchmarks import peer


async def test_concurrent_clients_count_every_answer(monkeypatch: pytest.MonkeyPatch):
    """Answers that arrive while another client awaits its own are all counted: a total read
    before an await and written back after it would keep only one client's answers a wave."""

    async def one_chat(http, server, i: int, max_tokens: int, kind: str) -> int:
        await asyncio.sleep(0.01 * (i % 3))
        return i + 1

    monkeypatch.setattr(peer, "one_chat", one_chat)
    async with httpx.AsyncClient() as http:
        for clients in (1, 8, 64):
            total = await peer.send_chats(http, peer.Server("fake", "http://127.0.0.1:9"), clients, 64, 8, "chat")
            assert total == sum(range(1, 65)), clients
