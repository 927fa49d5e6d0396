"""An engine client over remote inference servers: ours, or any OpenAI-compatible one
(vLLM, TGI, llama.cpp server, Ollama).

- One batch is one ``POST /generate_batch`` where the server offers it; otherwise the same batch is
  sent as concurrent ``/v1/chat/completions`` calls under a concurrency cap. Which path a server
  takes is decided on first use, logged, and checked again after ``recheck_s``.
- Several URLs are balanced by fewest outstanding requests. One that cannot be reached is skipped
  for ``retry_after_s``. Only calls that never reached a server are retried (on the next URL).
- Connections are pooled, and every call has a timeout. An upstream that is down or fails gives
  ``Unavailable`` at once, per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from .async_engine import TokenDelta
from .engine import Completion, EngineInfo, EngineStats, Timings, Usage
from .errors import EngineError, RequestTimeout, Unavailable, UpstreamError
from .openai_api import request_body
from .params import ChatRequest
from .sequence import FinishReason

log = logging.getLogger(__name__)
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass
class Upstream:
    url: str
    outstanding: int = 0
    down_until: float = 0.0
    batch_path: bool | None = None  # None: not known yet
    decided_at: float = 0.0


class BatchCall:
    """One upstream call shared by the tickets of a batch. When every ticket has been abandoned
    (cancelled or past its deadline), the call is cancelled: its connection closes, and the
    inference service aborts the generation."""

    def __init__(self, call: asyncio.Future, tickets: int) -> None:
        self.call = call
        self.waiting = tickets

    def abandon(self) -> None:
        self.waiting -= 1
        if self.waiting == 0 and not self.call.done():
            self.call.cancel()


class RemoteTicket:
    """One request's share of a batch call already under way. Closing it, or dropping it
    unconsumed, abandons that share (the call is cancelled once every share is abandoned)."""

    def __init__(self, batch: BatchCall, index: int) -> None:
        self.batch = batch
        self.index = index
        self._release = weakref.finalize(self, batch.abandon)
        self._release.atexit = False

    def close(self) -> None:
        self._release()

    async def result(self, timeout: float | None = None) -> Completion | EngineError:
        try:
            async with asyncio.timeout(timeout):
                return (await asyncio.shield(self.batch.call))[self.index]
        except TimeoutError:
            self.close()
            return RequestTimeout(f"the request exceeded its deadline of {timeout:g} s")
        except asyncio.CancelledError:
            self.close()
            raise


class RemoteEngine:
    def __init__(self, urls: Sequence[str], timeout_s: float = 300.0, connect_timeout_s: float = 2.0,
                 max_concurrency: int = 64, retry_after_s: float = 5.0, recheck_s: float = 60.0) -> None:
        self.upstreams = [Upstream(u.rstrip("/")) for u in urls]
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.max_concurrency = max_concurrency
        self.retry_after_s = retry_after_s
        self.recheck_s = recheck_s
        self.upstream_calls = 0
        self._client: httpx.AsyncClient | None = None
        self._limit: asyncio.Semaphore | None = None
        self._info = EngineInfo("remote", "remote", 0, 0, "remote", "", 0, 0, 0, 0)  # upstream URLs stay in logs

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(
            max_connections=self.max_concurrency * len(self.upstreams) + 16))
        self._limit = asyncio.Semaphore(self.max_concurrency)
        try:
            models = (await self._send("GET", "/v1/models")).json()["data"][0]
            info = models.get("smollm")
            self._info = EngineInfo(**info) if info else EngineInfo(
                models["id"], self._info.source, 0, models.get("max_model_len", 0), "remote", "", 0, 0, 0, 0)
        except (EngineError, KeyError, IndexError, ValueError, TypeError) as exc:
            log.warning("model info not available from %s: %s", ", ".join(u.url for u in self.upstreams), exc)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def running(self) -> bool:
        return self._client is not None and any(u.down_until <= time.monotonic() for u in self.upstreams)

    def stats(self) -> EngineStats:
        return EngineStats(running=sum(u.outstanding for u in self.upstreams))

    def info(self) -> EngineInfo:
        return self._info

    # --- batches --------------------------------------------------------------------------

    async def submit(self, requests: Sequence[ChatRequest]) -> list[RemoteTicket | EngineError]:
        """A request whose text cannot be sent gets its error here; the rest go as one call."""
        checked = [_unsendable(r) for r in requests]
        valid = [r for r, error in zip(requests, checked, strict=True) if error is None]
        batch = BatchCall(asyncio.ensure_future(self.generate_batch(valid)), len(valid))
        index = iter(range(len(valid)))
        return [error if error is not None else RemoteTicket(batch, next(index)) for error in checked]

    async def generate_batch(self, requests: Sequence[ChatRequest]) -> list[Completion | EngineError]:
        if not requests:
            return []
        try:
            upstream = self._pick()
            if self._use_batch_path(upstream):
                results = await self._batch_call(upstream, requests)
                if results is not None:
                    return results
            return list(await asyncio.gather(*(self._one(r) for r in requests)))
        except EngineError as exc:
            return [exc] * len(requests)

    def _use_batch_path(self, upstream: Upstream) -> bool:
        if upstream.batch_path is False and time.monotonic() - upstream.decided_at > self.recheck_s:
            upstream.batch_path = None
        return upstream.batch_path is not False

    async def _batch_call(self, upstream: Upstream, requests: Sequence[ChatRequest]) -> list | None:
        """Results, or None when this server has no /generate_batch (then remembered)."""
        body = {"requests": [request_body(r) for r in requests]}
        response = await self._send("POST", "/generate_batch", json=body, prefer=upstream)
        if response.status_code in (404, 405):
            upstream.batch_path, upstream.decided_at = False, time.monotonic()
            log.info("%s has no /generate_batch: batches go as concurrent /v1/chat/completions", upstream.url)
            return None
        if upstream.batch_path is None:
            upstream.batch_path, upstream.decided_at = True, time.monotonic()
            log.info("%s offers /generate_batch: one call per batch", upstream.url)
        if response.status_code != 200:
            return [_error(response)] * len(requests)
        return [_from_item(item, r.request_id) for item, r in zip(response.json()["results"], requests, strict=True)]

    async def _one(self, request: ChatRequest) -> Completion | EngineError:
        async with self._limit:
            try:
                started = time.perf_counter()
                response = await self._send("POST", "/v1/chat/completions", json=request_body(request))
            except EngineError as exc:
                return exc
        if response.status_code != 200:
            return _error(response)
        data = response.json()
        choice, usage = data["choices"][0], data.get("usage") or {}
        total = (time.perf_counter() - started) * 1000
        return Completion(request.request_id, choice["message"]["content"] or "", _finish(choice.get("finish_reason")),
                          Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
                          Timings(0.0, None, total))

    # --- streams --------------------------------------------------------------------------

    async def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]:
        """Deltas then the Completion; leaving early closes the HTTP stream (the server aborts)."""
        body = request_body(request, stream=True) | {"stream_options": {"include_usage": True}}
        started = time.perf_counter()
        async with self._stream("/v1/chat/completions", body) as response:
            if response.status_code != 200:
                await response.aread()
                raise _error(response)
            index, text, first, finish, usage = 0, [], None, FinishReason.STOP, {}
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    raise _error_from(data["error"])
                usage = data.get("usage") or usage
                for choice in data.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        first = first or time.perf_counter()
                        text.append(piece)
                        yield TokenDelta(index, piece)
                        index += 1
                    if choice.get("finish_reason"):
                        finish = _finish(choice["finish_reason"])
        ms = lambda t: (t - started) * 1000  # noqa: E731
        yield Completion(request.request_id, "".join(text), finish,
                         Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
                         Timings(0.0, ms(first) if first else None, ms(time.perf_counter())))

    @asynccontextmanager
    async def _stream(self, path: str, body: dict) -> AsyncIterator[httpx.Response]:
        upstream = self._pick()
        upstream.outstanding += 1
        try:
            async with self._client.stream("POST", upstream.url + path, json=body) as response:
                yield response
        except NEVER_SENT as exc:
            self._mark_down(upstream, exc)
            raise Unavailable("inference upstream unreachable") from None
        except httpx.HTTPError as exc:
            raise _failed(upstream, exc) from None
        finally:
            upstream.outstanding -= 1

    # --- transport ------------------------------------------------------------------------

    def _pick(self, prefer: Upstream | None = None) -> Upstream:
        now = time.monotonic()
        alive = [u for u in self.upstreams if u.down_until <= now]
        if not alive:
            raise Unavailable("no inference upstream reachable")
        if prefer in alive:
            return prefer
        return min(alive, key=lambda u: u.outstanding)

    def _mark_down(self, upstream: Upstream, exc: Exception) -> None:
        upstream.down_until = time.monotonic() + self.retry_after_s
        log.warning("inference upstream %s unreachable (%s); skipping it for %.0f s",
                    upstream.url, type(exc).__name__, self.retry_after_s)

    async def _send(self, method: str, path: str, prefer: Upstream | None = None, **kwargs) -> httpx.Response:
        """One call; retried on the next upstream only if it never reached a server."""
        if self._client is None:
            raise Unavailable("the remote engine is not started")
        tried: set[str] = set()
        while True:
            upstream = self._pick(prefer)
            if upstream.url in tried:
                log.warning("no inference upstream reachable (tried %s)", ", ".join(sorted(tried)))
                raise Unavailable("no inference upstream reachable")
            tried.add(upstream.url)
            prefer = None
            upstream.outstanding += 1
            self.upstream_calls += 1
            try:
                return await self._client.request(method, upstream.url + path, **kwargs)
            except NEVER_SENT as exc:
                self._mark_down(upstream, exc)
            except httpx.HTTPError as exc:
                raise _failed(upstream, exc) from None
            finally:
                upstream.outstanding -= 1


def _failed(upstream: Upstream, exc: Exception) -> Unavailable:
    """The client hears that the upstream failed; which upstream, only the log says."""
    log.warning("inference upstream %s failed: %r", upstream.url, exc)
    return Unavailable(f"inference upstream failed: {type(exc).__name__}")


def _unsendable(request: ChatRequest) -> EngineError | None:
    try:
        request.check_texts()
    except EngineError as exc:
        return exc
    return None


def _finish(reason: str | None) -> FinishReason:
    try:
        return FinishReason(reason or "stop")
    except ValueError:
        return FinishReason.STOP


def _from_item(item: dict, request_id: str) -> Completion | EngineError:
    if "error" in item:
        return _error_from(item["error"])
    t, u = item["timings"], item["usage"]
    return Completion(request_id, item["text"], _finish(item["finish_reason"]),
                      Usage(u["prompt_tokens"], u["completion_tokens"]),
                      Timings(t["queued_ms"], t["first_token_ms"], t["total_ms"]))


def _error_from(error: dict | str) -> EngineError:
    if isinstance(error, str):
        return UpstreamError("INTERNAL", error)
    return UpstreamError(error.get("code") or "INTERNAL", error.get("message") or "upstream error", error.get("field"))


def _error(response: httpx.Response) -> EngineError:
    """An upstream's error response as a typed error (OpenAI's shape or ours)."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    message = (error.get("message") if isinstance(error, dict) else str(error)) or response.reason_phrase
    if response.status_code == 429:
        return UpstreamError("OVERLOADED", message)
    if response.status_code >= 500:
        return Unavailable(f"inference upstream answered {response.status_code}: {message}")
    if isinstance(error, dict) and error.get("code") in ("INVALID_INPUT", "PROMPT_TOO_LONG"):
        return UpstreamError(error["code"], message, error.get("field"))
    return UpstreamError("INVALID_INPUT", message, error.get("param") if isinstance(error, dict) else None)
