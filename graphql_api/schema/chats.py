"""From ChatInput to engine requests and from engine results to GraphQL results."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from strawberry import ID

from inference.boundary import (
    ChatMessage,
    ChatRequest,
    Completion,
    EngineError,
    IncompleteOutput,
    InvalidRequest,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolMode,
    Tools,
    conclude,
)
from inference.boundary.options import DEFAULT_MAX_NEW_TOKENS
from inference.boundary.request import check_text

from ..observability import log_operation
from ..quotas import estimate_tokens
from ..settings import ApiSettings
from .context import Context
from .errors import chat_error, invalid
from .options import graphql_field, graphql_message, sampling_params
from .types import (
    ChatChoice,
    ChatError,
    ChatErrorCode,
    ChatInput,
    ChatMessageInput,
    ChatResult,
    ChatRole,
    ChatSuccess,
    Timings,
    TokenLogprob,
    ToolChoiceMode,
    Usage,
)
from .types import ToolCall as GraphQLToolCall

# Reserved for a chat without maxTokens when the engine does not say its default (a foreign upstream).


def to_request(item: ChatInput, settings: ApiSettings, request_id: str) -> ChatRequest | ChatError:
    """A ChatRequest, or the ChatError naming the first field that is wrong."""
    sent, chat_id = str(item.chat_id), echo_id(item.chat_id, settings)
    if not sent.strip():
        return invalid(chat_id, "chatId", "chatId must not be blank")
    if len(sent) > settings.max_chat_id_chars:
        return invalid(chat_id, "chatId",
                       f"chatId has {len(sent)} characters; the limit is {settings.max_chat_id_chars}")
    after_tool = bool(item.history) and (item.history or [])[-1].role is ChatRole.TOOL
    if not item.user_prompt.strip() and not after_tool:
        return invalid(chat_id, "userPrompt", "userPrompt must not be empty or blank (unless the history ends with a TOOL turn)")
    limit = settings.max_prompt_chars
    texts = [("chatId", chat_id), ("userPrompt", item.user_prompt), ("systemPrompt", item.system_prompt or "")]
    texts += [(f"history[{i}].content", m.content) for i, m in enumerate(item.history or ())]
    for field, text in texts:
        if len(text) > limit:
            return invalid(chat_id, field, f"{field} has {len(text)} characters; the limit is {limit}")
        try:
            check_text(field, text)
        except InvalidRequest as exc:
            return invalid(chat_id, field, exc.message)
    history = item.history or []
    if len(history) > settings.max_history:
        return invalid(chat_id, "history", f"history has {len(history)} turns; the limit is {settings.max_history}")
    system = item.system_prompt if item.system_prompt is not None else settings.default_system_prompt
    # An empty (or blank) systemPrompt means none: an empty system turn, so that the chat
    # template's own built-in system prompt does not apply either.
    messages = [ChatMessage(role="system", content=system if system.strip() else "")]
    try:
        messages += [history_message(m, i) for i, m in enumerate(history)]
        tools = chat_tools(item)
        params = sampling_params(item.options)
    except InvalidRequest as exc:
        return invalid(chat_id, graphql_field(exc.field) or "options", graphql_message(exc))
    if item.user_prompt.strip():  # blank after a TOOL turn: the model answers the tool's result
        messages.append(ChatMessage(role="user", content=item.user_prompt))
    if not 1 <= params.n <= settings.max_choices:
        return invalid(chat_id, "options.n", f"n must be between 1 and {settings.max_choices}, got {params.n}")
    return ChatRequest(messages=tuple(messages), params=params, request_id=f"{request_id}:{chat_id}", tools=tools)


def history_message(m: ChatMessageInput, i: int) -> ChatMessage:
    """One history turn; raises InvalidRequest naming what is wrong in it."""
    if m.role is ChatRole.TOOL and not m.tool_call_id:
        raise InvalidRequest(f"history[{i}].toolCallId is required in a TOOL turn", field=f"history[{i}].toolCallId")
    calls = tuple(ToolCall(id=c.id, name=c.name, arguments=json.dumps(c.arguments, ensure_ascii=False)) for c in m.tool_calls or ())
    return ChatMessage(role=m.role.value, content=m.content, tool_calls=calls, tool_call_id=m.tool_call_id)


def chat_tools(item: ChatInput) -> Tools | None:
    """The chat's tools and choice, checked (names, schemas' size and depth, the choice offered)."""
    choice = item.tool_choice
    if not item.tools:
        if choice is not None and choice.mode is not ToolChoiceMode.NONE:
            raise InvalidRequest("toolChoice needs tools", field="toolChoice")
        return None
    offered = tuple(Tool.of(t.name, t.description, t.parameters, i) for i, t in enumerate(item.tools))
    named = choice.tool if choice is not None and isinstance(choice.tool, str) else None
    mode = choice.mode if choice is not None and isinstance(choice.mode, ToolChoiceMode) else ToolChoiceMode.AUTO
    tools = Tools(tools=offered, mode=ToolMode.REQUIRED if named else ToolMode(mode.value), name=named, parallel=bool(item.parallel_tool_calls))
    tools.validate()
    return tools


def success(chat_id: str, c: Completion, fmt: ResponseFormat | None = None) -> ChatSuccess | ChatError:
    """The ChatSuccess of a completion, each answer with its parsed JSON when it has a response
    format; the INCOMPLETE_OUTPUT error (with the first answer's partial text) when no answer
    completed the format."""
    answers = c.answers
    values: list[Any] = []
    incomplete: list[IncompleteOutput] = []
    for a in answers:
        try:
            values.append(conclude(fmt, c if len(answers) == 1 else a))
        except IncompleteOutput as exc:
            values.append(None)
            incomplete.append(exc)
    if len(incomplete) == len(answers):
        first = incomplete[0]
        return ChatError(chat_id=ID(chat_id), code=first.code, message=first.message, field=graphql_field(first.field),
                         partial_text=first.partial_text, used_tokens=c.usage.total_tokens)
    logprobs = lambda entries: None if entries is None else [TokenLogprob.of(e) for e in entries]
    choices = [ChatChoice(index=a.index, response=a.text, finish_reason=a.finish_reason, json=value, logprobs=logprobs(a.logprobs),
                          tool_calls=[GraphQLToolCall.of(t) for t in a.tool_calls])
               for a, value in zip(answers, values, strict=True)]
    return ChatSuccess(json=values[0], logprobs=logprobs(c.logprobs), choices=choices,
        tool_calls=[GraphQLToolCall.of(t) for t in c.tool_calls],
        chat_id=ID(chat_id), response=c.text, finish_reason=c.finish_reason,
        usage=Usage(prompt_tokens=c.usage.prompt_tokens, completion_tokens=c.usage.completion_tokens,
                    total_tokens=c.usage.total_tokens),
        timings=Timings(queued_ms=None if c.timings.queued_ms is None else round(c.timings.queued_ms, 3),
                        time_to_first_token_ms=None if c.timings.first_token_ms is None else round(c.timings.first_token_ms, 3),
                        total_ms=round(c.timings.total_ms, 3)),
    )


def outcome(result: ChatResult) -> str:
    return "SUCCESS" if isinstance(result, ChatSuccess) else result.code.name


def record(ctx: Context, operation: str, chat_ids: list[str], results: list[ChatResult], started: float) -> None:
    key = ctx.caller.name
    outcomes = [outcome(r) for r in results]
    for o in outcomes:
        ctx.metrics.chats.labels(operation, o, key).inc()
    for r in results:
        if isinstance(r, ChatSuccess):
            ctx.metrics.tokens.labels(key, "prompt").inc(r.usage.prompt_tokens)
            ctx.metrics.tokens.labels(key, "completion").inc(r.usage.completion_tokens)
    log_operation(ctx.request_id, operation, list(zip(chat_ids, outcomes, strict=True)), started, key)


async def admit(ctx: Context, chat_id: str, request: ChatRequest) -> ChatError | int:
    """Charge the caller's quotas for one chat: the tokens reserved, or RATE_LIMITED."""
    if ctx.quotas is None:
        return 0
    reserved = estimate_tokens(request, ctx.engine.info().default_max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
    retry_ms = await ctx.quotas.admit(ctx.caller, reserved)
    if retry_ms is None:
        return reserved
    return ChatError(chat_id=ID(chat_id), code=ChatErrorCode.RATE_LIMITED, retry_after_ms=retry_ms,
                     message=f"the quota of key {ctx.caller.name!r} is spent for this minute; retry in {retry_ms} ms")


def used_tokens(result: ChatResult) -> int:
    """Tokens a chat's answer used, as its result says (an error that ran nothing: 0)."""
    return result.usage.total_tokens if isinstance(result, ChatSuccess) else result.used_tokens or 0


async def settle(ctx: Context, reserved: int, used: int) -> None:
    """Settle a reservation to the tokens the chat used."""
    if ctx.quotas is not None and reserved:
        await ctx.quotas.settle(ctx.caller, reserved, used)


def echo_id(chat_id: object, settings: ApiSettings) -> str:
    """The chatId as answered and logged: as sent, cut to ``max_chat_id_chars`` (a longer one is
    an error, and is not echoed whole)."""
    text = str(chat_id)
    limit = settings.max_chat_id_chars
    return text if len(text) <= limit else text[:limit] + "…"


def cancelled(chat_id: str) -> ChatError:
    return ChatError(chat_id=ID(chat_id), code=ChatErrorCode.CANCELLED, field=None, message="the client went away")


def unavailable(chat_id: str) -> ChatError:
    return ChatError(chat_id=ID(chat_id), code=ChatErrorCode.UNAVAILABLE, field=None,
                     message="the server is shutting down; retry on another replica")


async def answer(ctx: Context, inputs: Sequence[ChatInput], operation: str) -> list[ChatResult]:
    """One result per input, in order: valid chats go to the DataLoader in this same tick.
    A dropped client (cancellation) is logged and counted too, as CANCELLED."""
    started = time.perf_counter()
    chat_ids = [echo_id(i.chat_id, ctx.settings) for i in inputs]
    try:
        results = await _answer(ctx, inputs)
    except asyncio.CancelledError:
        record(ctx, operation, chat_ids, [cancelled(c) for c in chat_ids], started)
        raise
    record(ctx, operation, chat_ids, results, started)
    return results


async def _answer(ctx: Context, inputs: Sequence[ChatInput]) -> list[ChatResult]:
    if ctx.draining():
        return [unavailable(echo_id(i.chat_id, ctx.settings)) for i in inputs]
    results: list[ChatResult | None] = [None] * len(inputs)
    pending: list[tuple[int, str, ChatRequest]] = []
    seen: set[str] = set()
    for i, item in enumerate(inputs):
        request = to_request(item, ctx.settings, ctx.request_id)
        chat_id = echo_id(item.chat_id, ctx.settings)
        if isinstance(request, ChatError):
            results[i] = request
        elif chat_id in seen:
            results[i] = ChatError(chat_id=ID(chat_id), code=ChatErrorCode.DUPLICATE_CHAT_ID, field="chatId",
                                   message=f"chatId {chat_id!r} appears more than once in this batch; only its first occurrence is answered")
        else:
            seen.add(chat_id)
            pending.append((i, chat_id, request))
    admitted: list[tuple[int, str, ChatRequest, int]] = []
    for i, chat_id, request in pending:  # in input order: a batch over quota keeps its first chats
        charged = await admit(ctx, chat_id, request)
        if isinstance(charged, ChatError):
            results[i] = charged
        else:
            admitted.append((i, chat_id, request, charged))
    loaded = await asyncio.gather(*(_charged_load(ctx, chat_id, request, reserved)
                                    for _, chat_id, request, reserved in admitted))
    for (i, *_), result in zip(admitted, loaded, strict=True):
        results[i] = result
    return results  # type: ignore[return-value]


async def _charged_load(ctx: Context, chat_id: str, request: ChatRequest, reserved: int) -> ChatResult:
    """A chat whose client went away before its answer keeps its whole reservation: how far it
    got is not known here, and a refund would make dropping the connection a free way past the quota."""
    used = reserved
    try:
        result = await _load(ctx, chat_id, request)
        used = used_tokens(result)
        return result
    finally:
        await settle(ctx, reserved, used)


async def _load(ctx: Context, chat_id: str, request: ChatRequest) -> ChatResult:
    """Cancellation is safe at every point: before the loader dispatches (the Ticket made for the
    cancelled future is dropped, which aborts it), after (the Ticket delivered to a task that was
    cancelled before it resumed is closed here), or while awaiting the result (``result`` closes)."""
    future = ctx.loader.load(request)
    try:
        ticket = await future
    except EngineError as exc:
        return chat_error(chat_id, exc)
    except asyncio.CancelledError:
        if future.done() and not future.cancelled() and future.exception() is None:
            delivered = future.result()
            if not isinstance(delivered, EngineError):
                delivered.close()
        raise
    if isinstance(ticket, EngineError):  # the loader raises these; a value is kept typed all the same
        return chat_error(chat_id, ticket)
    result = await ticket.result(ctx.settings.request_timeout_s)
    if isinstance(result, EngineError):
        return chat_error(chat_id, result)
    return success(chat_id, result, request.params.response_format)
