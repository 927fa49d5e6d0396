"""An engine client over remote inference servers: ours, or any OpenAI-compatible one
(vLLM, TGI, llama.cpp server, Ollama).

- One batch is one ``POST /generate_batch`` where the server offers it; otherwise the same batch is
  sent as concurrent ``/v1/chat/completions`` calls under a concurrency cap. Which path a server
  takes is decided on first use, logged, and checked again after ``recheck_s``.
- Several URLs are balanced by fewest outstanding requests. One that cannot be reached is skipped
  for ``retry_after_s``. Only calls that never reached a server are retried (on the next URL).
- Connections are pooled, and every call has a timeout. An upstream that is down or fails gives
  ``Unavailable`` at once, per request; which upstream it was, only the log says.
- Bodies are the service's wire models (``inference.service.wire``); streams are read with httpx-sse.
- Structured output: JSON formats go as OpenAI's ``response_format``, regex and choice as vLLM's
  ``structured_outputs`` (which our service reads too). What kind of server the upstream is comes
  from its model card at start; a member it cannot honour is refused (``FORMAT_MEMBERS``), never
  sent to come back as unconstrained text.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from pydantic import ValidationError

from http_common import tracing

from .boundary import (
    ChatRequest,
    Completion,
    EngineError,
    EngineInfo,
    EngineStats,
    ErrorCode,
    FinishReason,
    InvalidFormat,
    InvalidRequest,
    PromptTooLong,
    RequestTimeout,
    SamplingParams,
    Timings,
    TokenDelta,
    TokenLogprob,
    ToolCall,
    Unavailable,
    UpstreamError,
    Usage,
)
from .boundary.options import InvalidOption
from .boundary.result import Choice as BoundaryChoice
from .service.wire import (
    BatchRequest,
    BatchResponse,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorBody,
    ErrorResponse,
    ModelCard,
    ModelList,
    TokenizeResponse,
    completion_of,
)

log = logging.getLogger(__name__)
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# How llama.cpp ("exceeds the available context size") and vLLM ("maximum context length") say it.
CONTEXT_ERROR = re.compile(r"context (size|length|window)|exceeds? the .*context", re.IGNORECASE)

# Response-format members each kind of upstream honours; the kind is read from its model card.
ALL_MEMBERS = frozenset({"json_schema", "json_object", "regex", "choice"})
FORMAT_MEMBERS: dict[str, frozenset[str]] = {
    "smollm-graphql": ALL_MEMBERS,  # our own inference service
    "vllm": ALL_MEMBERS,  # response_format, and structured_outputs for regex and choice
    "llama.cpp": frozenset({"json_schema", "json_object"}),  # JSON Schema via response_format; no regex, no choice list
    "openai-compatible": frozenset({"json_schema", "json_object"}),  # OpenAI's response_format only
}


# Options past OpenAI's core each kind of upstream honours in our form; any other kind gets a request
# that sets one refused (llama.cpp's repeat_penalty looks at the last 64 tokens only: not the same option).
# llama.cpp's server answers n > 1 with "Only one completion choice is allowed".
PENALTIES = frozenset({"min_p", "repetition_penalty", "frequency_penalty", "presence_penalty", "logit_bias"})
OPTIONS = PENALTIES | {"n"}
OPTION_MEMBERS: dict[str, frozenset[str]] = {
    "smollm-graphql": OPTIONS,
    "vllm": OPTIONS,
    "llama.cpp": PENALTIES - {"repetition_penalty"},
    "openai-compatible": frozenset({"frequency_penalty", "presence_penalty", "logit_bias", "n"}),
}
DEFAULTS = SamplingParams()
# Upstreams that call tools. llama.cpp's server renders tools only through a chat template that has
# them, and SmolLM2's has none: it takes the field and answers in text (benchmarks/tools.py), so it is refused.
TOOL_UPSTREAMS = frozenset({"smollm-graphql", "vllm", "openai-compatible"})


def upstream_kind(card: ModelCard | None) -> str:
    """Which kind of server a model card comes from (an unknown or unread one: the plain OpenAI API)."""
    if card is None:
        return "openai-compatible"
    if card.smollm is not None:
        return "smollm-graphql"
    return {"vllm": "vllm", "llamacpp": "llama.cpp"}.get(card.owned_by, "openai-compatible")


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
    def __init__(self, urls: Sequence[str], api_key: str | None = None, timeout_s: float = 300.0,
                 connect_timeout_s: float = 2.0,
                 max_concurrency: int = 64, retry_after_s: float = 5.0, recheck_s: float = 60.0) -> None:
        self.upstreams = [Upstream(u.rstrip("/")) for u in urls]
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.max_concurrency = max_concurrency
        self.retry_after_s = retry_after_s
        self.recheck_s = recheck_s
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.upstream_calls = 0
        self.in_flight = 0  # chats submitted or streaming and not yet answered
        self._client: httpx.AsyncClient | None = None
        self._limit: asyncio.Semaphore | None = None
        self._info = EngineInfo.unknown("remote")  # upstream URLs stay in logs
        self.kind = upstream_kind(None)  # which response formats it honours: FORMAT_MEMBERS

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout, headers=self.headers, limits=httpx.Limits(
            max_connections=self.max_concurrency * len(self.upstreams) + 16))
        tracing.instrument_httpx(self._client)
        self._limit = asyncio.Semaphore(self.max_concurrency)
        try:
            card = ModelList.model_validate_json((await self._send("GET", "/v1/models")).content).data[0]
            self.kind = upstream_kind(card)
            self._info = card.smollm or EngineInfo(name=card.id, source="remote", context_length=card.max_model_len or 0,
                                                   device="remote")
        except (EngineError, IndexError, ValidationError) as exc:
            log.warning("model info not available from %s: %s", ", ".join(u.url for u in self.upstreams), exc)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def running(self) -> bool:
        return self._client is not None and any(u.down_until <= time.monotonic() for u in self.upstreams)

    def stats(self) -> EngineStats:
        """Chats in flight, counted as the embedded engine counts them (not HTTP calls); how the
        upstream splits them into running and waiting is its own business."""
        return EngineStats(running=self.in_flight)

    def info(self) -> EngineInfo:
        return self._info

    @property
    def metrics(self) -> None:
        """None: the upstream's series are at its own ``/metrics``."""
        return None

    # --- batches --------------------------------------------------------------------------

    async def submit(self, requests: Sequence[ChatRequest]) -> list[RemoteTicket | EngineError]:
        """A request whose text cannot be sent gets its error here; the rest go as one call."""
        checked = [_unsendable(r) or self.refused_format(r) or self.refused_option(r) for r in requests]
        valid = [r for r, error in zip(requests, checked, strict=True) if error is None]
        batch = BatchCall(asyncio.ensure_future(self._counted(self.generate_batch(valid), len(valid))), len(valid))
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

    async def _counted(self, call: Any, chats: int) -> Any:
        self.in_flight += chats
        try:
            return await call
        finally:
            self.in_flight -= chats

    def _use_batch_path(self, upstream: Upstream) -> bool:
        if upstream.batch_path is False and time.monotonic() - upstream.decided_at > self.recheck_s:
            upstream.batch_path = None
        return upstream.batch_path is not False

    async def _batch_call(self, upstream: Upstream, requests: Sequence[ChatRequest]) -> list | None:
        """Results, or None when this server has no /generate_batch (then remembered)."""
        body = BatchRequest(requests=[ChatCompletionRequest.of(r).body() for r in requests])
        response = await self._send("POST", "/generate_batch", json=body.model_dump(), prefer=upstream)
        if response.status_code in (404, 405):
            upstream.batch_path, upstream.decided_at = False, time.monotonic()
            log.info("%s has no /generate_batch: batches go as concurrent /v1/chat/completions", upstream.url)
            return None
        if upstream.batch_path is None:
            upstream.batch_path, upstream.decided_at = True, time.monotonic()
            log.info("%s offers /generate_batch: one call per batch", upstream.url)
        if response.status_code != 200:
            return [upstream_error(response.status_code, response.content)] * len(requests)
        try:
            items = BatchResponse.model_validate_json(response.content).results
        except ValidationError as exc:
            log.warning("%s answered /generate_batch with a body that does not parse: %s", upstream.url, exc)
            return [Unavailable("inference upstream answered with a malformed body")] * len(requests)
        return [item.to_result(r.request_id) for item, r in zip(items, requests, strict=True)]

    async def _one(self, request: ChatRequest) -> Completion | EngineError:
        if self._limit is None:
            return Unavailable("the remote engine is not started")
        async with self._limit:
            try:
                started = time.perf_counter()
                response = await self._send("POST", "/v1/chat/completions", json=ChatCompletionRequest.of(request).body())
            except EngineError as exc:
                return exc
        if response.status_code != 200:
            return upstream_error(response.status_code, response.content)
        try:
            answer = ChatCompletion.model_validate_json(response.content)
        except ValidationError:
            return Unavailable("inference upstream answered with a malformed body")
        if not answer.choices:
            return Unavailable("inference upstream answered with no choices")
        usage = answer.usage.to_usage() if answer.usage else Usage(prompt_tokens=0, completion_tokens=0)
        return _completion(request, [c.to_choice() for c in answer.choices], usage, None, started)

    def refused_format(self, request: ChatRequest) -> InvalidFormat | None:
        """The error for a response format the upstream cannot honour, or None."""
        fmt = request.params.response_format
        if fmt is None or fmt.kind in FORMAT_MEMBERS[self.kind]:
            return None
        honoured = ", ".join(sorted(FORMAT_MEMBERS[self.kind]))
        return InvalidFormat(f"is not supported by the inference upstream ({self.kind}); it supports {honoured}", fmt.kind)

    def refused_option(self, request: ChatRequest) -> InvalidRequest | None:
        """The error for a sampling option the upstream does not honour (set to other than its
        default), or for tools offered to one that does not call them; or None."""
        for name in sorted(OPTIONS - OPTION_MEMBERS[self.kind]):
            if getattr(request.params, name) != getattr(DEFAULTS, name):
                return InvalidOption(name, f"is not supported by the inference upstream ({self.kind})")
        if request.tools is not None and request.tools.active and self.kind not in TOOL_UPSTREAMS:
            return InvalidRequest(f"tools are not supported by the inference upstream ({self.kind}): it answers "
                                  "in text without them", field="tools")
        return None

    async def tokenize(self, text: str) -> list[int]:
        """The upstream's ``/tokenize`` (vLLM's and ours take ``prompt``; llama.cpp's ``content``)."""
        body = {"content": text} if self.kind == "llama.cpp" else {"prompt": text, "add_special_tokens": False}
        response = await self._send("POST", "/tokenize", json=body)
        if response.status_code != 200:
            raise upstream_error(response.status_code, response.content)
        try:
            tokens = TokenizeResponse.model_validate_json(response.content).tokens
        except ValidationError:
            raise Unavailable("inference upstream answered /tokenize with a malformed body") from None
        return tokens

    # --- streams --------------------------------------------------------------------------

    async def stream(self, request: ChatRequest) -> AsyncIterator[TokenDelta | Completion]:
        """Deltas then the Completion; leaving early closes the HTTP stream (the server aborts)."""
        refused = self.refused_format(request) or self.refused_option(request)
        if refused is not None:
            raise refused
        body = ChatCompletionRequest.of(request, stream=True).body()
        started = time.perf_counter()
        self.in_flight += 1
        try:
            async with self._stream("/v1/chat/completions", body) as source:
                first, usage = None, Usage(prompt_tokens=0, completion_tokens=0)
                answers: dict[int, Answer] = {}
                async for sse in source.aiter_sse():
                    if sse.data == "[DONE]":
                        break
                    chunk = ChatCompletionChunk.model_validate_json(sse.data)
                    if chunk.error is not None:
                        raise chunk.error.to_error()
                    usage = chunk.usage.to_usage() if chunk.usage else usage
                    for choice in chunk.choices:
                        answer = answers.setdefault(choice.index, Answer())
                        entries = choice.logprobs.entries() if choice.logprobs else ()
                        answer.logprobs += entries
                        if choice.delta.content:
                            first = first or time.perf_counter()
                            answer.text.append(choice.delta.content)
                            yield TokenDelta(index=answer.deltas, text=choice.delta.content, tokens=max(1, len(entries)),
                                             logprobs=entries, choice=choice.index)
                            answer.deltas += 1
                        for call in choice.delta.tool_calls or ():  # OpenAI streams a call's arguments in pieces
                            entry = answer.calls.setdefault(call.index, ["", "", ""])
                            entry[0] = call.id or entry[0]
                            if call.function is not None:
                                entry[1] += call.function.name or ""
                                entry[2] += call.function.arguments or ""
                        answer.finish = choice.finish_reason or answer.finish
        except ValidationError as exc:
            log.warning("an inference upstream streamed a chunk that does not parse: %s", exc)
            raise Unavailable("inference upstream streamed a malformed chunk") from None
        finally:
            self.in_flight -= 1
        yield _completion(request, [a.choice(i) for i, a in sorted(answers.items())], usage, first, started)

    @asynccontextmanager
    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        if self._client is None:
            raise Unavailable("the remote engine is not started")
        upstream = self._pick()
        upstream.outstanding += 1
        try:
            async with aconnect_sse(self._client, "POST", upstream.url + path, json=body) as source:
                response = source.response
                if response.status_code != 200:
                    await response.aread()
                    raise upstream_error(response.status_code, response.content)
                yield source
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


@dataclass
class Answer:
    """One choice of a stream, as its chunks arrive."""

    text: list[str] = field(default_factory=list)
    finish: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    deltas: int = 0
    calls: dict[int, list[str]] = field(default_factory=dict)  # index -> [id, name, arguments so far]

    def choice(self, index: int) -> BoundaryChoice:
        """The answer once its stream has ended."""
        calls = tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in (self.calls[k] for k in sorted(self.calls)))
        return BoundaryChoice(index=index, text="".join(self.text), finish_reason=FinishReason.parse(self.finish),
                              logprobs=self.logprobs, tool_calls=calls)


def _completion(request: ChatRequest, choices: list[BoundaryChoice], usage: Usage, first: float | None,
                started: float) -> Completion:
    """A remote answer, timed from here: the upstream's queueing is not ours to know (None)."""
    ms = lambda t: (t - started) * 1000
    if not request.params.logprobs:
        choices = [replace(c, logprobs=None) for c in choices]
    timings = Timings(queued_ms=None, first_token_ms=ms(first) if first else None, total_ms=ms(time.perf_counter()))
    return completion_of(request.request_id, choices, usage, timings)


def _error_body(body: bytes) -> ErrorBody | None:
    """OpenAI's ``{"error": {...}}``, or the bare ``{"message": ...}`` some servers (older vLLM) send."""
    for parse in (lambda: ErrorResponse.model_validate_json(body).error, lambda: ErrorBody.model_validate_json(body)):
        try:
            return parse()
        except ValidationError:
            pass
    return None


def upstream_error(status: int, body: bytes) -> EngineError:
    """An upstream's error response as a typed error: our own service's code is kept; a foreign
    server's context-length refusal is PROMPT_TOO_LONG, as our engine says it."""
    error = _error_body(body)
    if error is not None:
        message, code, field = error.message, ErrorCode.parse(error.code), error.field or error.param
    else:
        message, code, field = body.decode("utf-8", "replace")[:200] or f"HTTP {status}", None, None
    if status in (401, 403):
        log.error("an inference upstream refused this server's key (HTTP %d: %s); set INFERENCE_API_KEY", status, message)
        return Unavailable("the inference upstream refused this server's credentials")
    if status == 429:
        return UpstreamError(ErrorCode.OVERLOADED, message)
    if code is ErrorCode.PROMPT_TOO_LONG or CONTEXT_ERROR.search(message):
        return PromptTooLong(None, None, None, message=message)
    if status >= 500:
        return Unavailable(f"inference upstream answered {status}: {message}")
    if code is ErrorCode.INVALID_INPUT or code is None or code is ErrorCode.INTERNAL:
        return UpstreamError(ErrorCode.INVALID_INPUT, message, field)
    return UpstreamError(code, message, field)
