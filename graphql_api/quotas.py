"""Per-key quotas, kept by the ``limits`` library: in memory by default, in Redis (or any store
``limits`` knows) by URI, so that several API replicas share them.

- requests per minute: one per chat (aliases and batch items all count);
- tokens per minute: prompt plus ``maxTokens`` reserved when a chat is admitted (the prompt
  estimated from its characters, 4 per token), then settled to what the chat really used: a
  stream that ends early (cancelled, dropped, failed) is charged its prompt and every token it
  streamed, a chat whose client went away before its answer keeps its whole reservation;
- concurrent streams: a counter in the same store, taken when a ``chatStream`` opens and given
  back when it ends.
Windows are fixed minutes (``limits``' fixed-window strategy); a refusal says when the window
that refused resets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from http_common.keys import ApiKey
from inference.boundary import ChatRequest

STREAM_EXPIRY_S = 24 * 3600  # a stream counter outlives any stream; a crashed replica's count expires


@dataclass(frozen=True)
class Usage:
    requests_this_minute: int
    tokens_this_minute: int
    open_streams: int


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """A chat's prompt before it is tokenized: characters / 4, plus the template's few tokens per message."""
    return sum(len(m.content) // 4 + 4 for m in request.messages)


def estimate_tokens(request: ChatRequest, default_max_new_tokens: int) -> int:
    """What a chat may use at most, before it is tokenized: its prompt (computed once) plus the new
    tokens each of its ``n`` answers may ask for."""
    return estimate_prompt_tokens(request) + request.params.n * (request.params.max_new_tokens or default_max_new_tokens)


class Quotas:
    def __init__(self, storage_uri: str = "memory://") -> None:
        uri = storage_uri if storage_uri.startswith("async+") else "async+" + storage_uri
        # "async+" URIs give the asyncio stores; Redis through redis-py (limits' default is coredis)
        options = {"implementation": "redispy"} if uri.startswith(("async+redis", "async+rediss")) else {}
        self.storage = cast(AsyncStorage, storage_from_string(uri, **options))
        self.window = FixedWindowRateLimiter(self.storage)

    def _items(self, key: ApiKey, tokens: int) -> list[tuple[RateLimitItem, int]]:
        limits = key.limits
        items: list[tuple[RateLimitItem, int]] = []
        if limits.requests_per_minute:
            items.append((RateLimitItemPerMinute(limits.requests_per_minute, namespace="rpm"), 1))
        if limits.tokens_per_minute:
            items.append((RateLimitItemPerMinute(limits.tokens_per_minute, namespace="tpm"), tokens))
        return items

    async def admit(self, key: ApiKey, tokens: int) -> int | None:
        """Charge one chat reserving ``tokens``: None when admitted, else milliseconds until the
        window that refused resets (nothing is charged then)."""
        charged: list[tuple[RateLimitItem, int]] = []
        for item, cost in self._items(key, tokens):
            charged.append((item, cost))
            if not await self.window.hit(item, key.name, cost=cost):  # atomic in the store: no race
                for taken, amount in charged:  # a refused chat costs nothing
                    await self.storage.incr(taken.key_for(key.name), taken.get_expiry(), amount=-amount)
                stats = await self.window.get_window_stats(item, key.name)
                return max(1, int((stats.reset_time - time.time()) * 1000))
        return None

    async def settle(self, key: ApiKey, reserved: int, used: int) -> None:
        """Bring a reservation to what the chat used: give back the rest, or charge what the
        estimate missed (a refund only while the window that took the reservation lasts)."""
        delta = used - reserved
        if not key.limits.tokens_per_minute or delta == 0:
            return
        item = RateLimitItemPerMinute(key.limits.tokens_per_minute, namespace="tpm")
        counter = item.key_for(key.name)
        if delta > 0 or await self.storage.get(counter) >= -delta:
            await self.storage.incr(counter, item.get_expiry(), amount=delta)

    async def open_stream(self, key: ApiKey) -> bool:
        """Take a stream place; False (and nothing taken) when the key's streams are all open."""
        cap = key.limits.concurrent_streams
        if not cap:
            return True
        counter = f"streams/{key.name}"
        if await self.storage.incr(counter, STREAM_EXPIRY_S) <= cap:
            return True
        await self.storage.incr(counter, STREAM_EXPIRY_S, amount=-1)
        return False

    async def close_stream(self, key: ApiKey) -> None:
        if key.limits.concurrent_streams:
            await self.storage.incr(f"streams/{key.name}", STREAM_EXPIRY_S, amount=-1)

    async def usage(self, key: ApiKey) -> Usage:
        limits, counts = key.limits, {}
        for namespace, amount in (("rpm", limits.requests_per_minute), ("tpm", limits.tokens_per_minute)):
            item = RateLimitItemPerMinute(amount or 1, namespace=namespace)
            counts[namespace] = await self.storage.get(item.key_for(key.name)) if amount else 0
        return Usage(counts["rpm"], counts["tpm"], await self.storage.get(f"streams/{key.name}"))
