"""The resolvers: thin, over the engine; the chats themselves are ``chats``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

import strawberry
from strawberry import ID
from strawberry.types import Info

from inference.boundary import EngineError, RequestTimeout, TokenDelta

from ..quotas import estimate_prompt_tokens
from .chats import admit, answer, echo_id, record, settle, success, to_request, unavailable, used_tokens
from .context import Context
from .errors import BatchTooLarge, chat_error
from .jobs import JobMutation, JobQuery, JobSubscription
from .types import (
    ChatBatchResult,
    ChatError,
    ChatErrorCode,
    ChatInput,
    ChatResult,
    ChatStreamEvent,
    ChatSuccess,
    ChatToken,
    Health,
    KeyLimits,
    KeyUsage,
    Limits,
    ModelInfo,
    TokenLogprob,
    Viewer,
)

log = logging.getLogger(__name__)


@strawberry.type
class Query(JobQuery):
    @strawberry.field(description="Is the engine ready, and how busy is it?")
    def health(self, info: Info[Context, None]) -> Health:
        ctx = info.context
        stats = ctx.engine.stats()
        return Health(ready=ctx.engine.running, waiting=stats.waiting, running=stats.running,
                      uptime_seconds=round(time.time() - ctx.started_at, 3))

    @strawberry.field(description="Who is calling (the API key's name), its quotas, and what it has used of them.")
    async def viewer(self, info: Info[Context, None]) -> Viewer:
        ctx = info.context
        key = ctx.caller
        used = await ctx.quotas.usage(key) if ctx.quotas is not None else None
        return Viewer(
            name=key.name,
            limits=KeyLimits(requests_per_minute=key.limits.requests_per_minute,
                             tokens_per_minute=key.limits.tokens_per_minute,
                             concurrent_streams=key.limits.concurrent_streams),
            usage=KeyUsage(requests_this_minute=used.requests_this_minute if used else 0,
                           tokens_this_minute=used.tokens_this_minute if used else 0,
                           open_streams=used.open_streams if used else 0))

    @strawberry.field(description="The model being served and the limits that apply.")
    def model(self, info: Info[Context, None]) -> ModelInfo:
        e, s = info.context.engine.info(), info.context.settings
        return ModelInfo(
            name=e.name, source=e.source, parameters=e.parameters, context_length=e.context_length,
            device=e.device, dtype=e.dtype,
            limits=Limits(max_batch_items=s.max_batch_items, max_tokens=e.max_new_tokens_cap,
                          default_max_tokens=e.default_max_new_tokens, max_running=e.max_running,
                          max_waiting=e.max_waiting, max_prompt_chars=s.max_prompt_chars, max_choices=s.max_choices),
        )


@strawberry.type
class Mutation(JobMutation):
    @strawberry.mutation(description="Answer one chat.")
    async def chat(self, info: Info[Context, None], input: ChatInput) -> ChatResult:
        return (await answer(info.context, [input], "chat"))[0]

    @strawberry.mutation(description="Answer many chats in one engine batch; one result per chatId, in order.")
    async def chat_batched(self, info: Info[Context, None], inputs: list[ChatInput]) -> ChatBatchResult:
        limit = info.context.settings.max_batch_items
        if len(inputs) > limit:
            raise BatchTooLarge(len(inputs), limit)
        results = await answer(info.context, inputs, "chatBatched")
        succeeded = sum(isinstance(r, ChatSuccess) for r in results)
        failed = len(results) - succeeded
        return ChatBatchResult(results=results, partial_success=succeeded > 0 and failed > 0,
                               succeeded=succeeded, failed=failed)


@strawberry.type
class Subscription(JobSubscription):
    @strawberry.subscription(description="Stream one chat: a ChatToken per text delta, then ChatSuccess or ChatError.")
    async def chat_stream(self, info: Info[Context, None], input: ChatInput) -> AsyncGenerator[ChatStreamEvent, None]:
        ctx = info.context
        chat_id = echo_id(input.chat_id, ctx.settings)
        started = time.perf_counter()
        final: ChatResult = ChatError(chat_id=ID(chat_id), code=ChatErrorCode.CANCELLED, message="unsubscribed")
        try:
            async for event in _stream(ctx, input):
                if not isinstance(event, ChatToken):
                    final = event
                yield event
        finally:
            record(ctx, "chatStream", [chat_id], [final], started)


async def _stream(ctx: Context, input: ChatInput) -> AsyncGenerator[ChatStreamEvent, None]:
    chat_id = echo_id(input.chat_id, ctx.settings)
    request = unavailable(chat_id) if ctx.draining() else to_request(input, ctx.settings, ctx.request_id)
    if isinstance(request, ChatError):
        yield request
        return
    charged = await admit(ctx, chat_id, request)
    if isinstance(charged, ChatError):
        yield charged
        return
    if ctx.quotas is not None and not await ctx.quotas.open_stream(ctx.caller):
        await settle(ctx, charged, 0)
        cap = ctx.caller.limits.concurrent_streams
        yield ChatError(chat_id=ID(chat_id), code=ChatErrorCode.RATE_LIMITED,
                        message=f"key {ctx.caller.name!r} has {cap} streams open, its limit; close one first")
        return
    final: ChatResult | None = None
    streamed = 0  # tokens generated so far: what a stream that never ends is charged, with its prompt
    timeout = ctx.settings.request_timeout_s
    try:
        async with asyncio.timeout(timeout):
            async for event in ctx.engine.stream(request):
                ctx.verify_key()  # a key revoked while it streams ends the stream here
                if isinstance(event, TokenDelta):
                    streamed += event.tokens
                    yield ChatToken(chat_id=ID(chat_id), index=event.index, delta=event.text, choice=event.choice,
                                    logprobs=[TokenLogprob.of(e) for e in event.logprobs] if request.params.logprobs else None)
                else:
                    final = success(chat_id, event, request.params.response_format)
                    yield final
    except EngineError as exc:
        yield chat_error(chat_id, exc)
    except TimeoutError:
        yield chat_error(chat_id, RequestTimeout(f"the request exceeded its deadline of {timeout:g} s"))
    finally:
        if ctx.quotas is not None:
            await ctx.quotas.close_stream(ctx.caller)
        await settle(ctx, charged, used_tokens(final) if final is not None else estimate_prompt_tokens(request) + streamed)
