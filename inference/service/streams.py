"""Streamed answers as server-sent events, in OpenAI's chunk shapes. Closing the response (the
client gone) closes the ticket's events, and so aborts the request."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..boundary import Completion, EngineError, StreamingTicket, TokenDelta
from .wire import (
    ChatCompletionChunk,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Delta,
    ErrorBody,
    FunctionDelta,
    TextCompletion,
    ToolCallDelta,
    UsageBody,
)


async def chat_events(ticket: StreamingTicket, model: str, include_usage: bool, logprobs: bool = False,
                      calls: bool = False) -> AsyncIterator[str]:
    """OpenAI-style chunks, each answer's under its ``index``. With tools, an answer that opens
    with ``<`` (a call: text answers cannot) is held, and its calls go out whole as ``tool_calls``
    at its end."""
    rid = f"chatcmpl-{ticket.seq_ids[0]}"

    def chunk(index: int, delta: Delta | None = None, finish: str | None = None, logprobs: ChoiceLogprobs | None = None) -> str:
        event = ChatCompletionChunk(id=rid, model=model, choices=[ChunkChoice(index=index, delta=delta or Delta(),
                                                                              finish_reason=finish, logprobs=logprobs)])
        return _event(event)

    held: dict[int, str] = {}
    for index in range(len(ticket.seq_ids)):
        yield chunk(index, Delta(role="assistant", content=""))
    try:
        async for event in ticket.events():
            if isinstance(event, TokenDelta):
                if calls and (event.choice in held or event.text.lstrip().startswith("<")):
                    held[event.choice] = held.get(event.choice, "") + event.text
                    continue
                yield chunk(event.choice, Delta(content=event.text),
                            logprobs=ChoiceLogprobs.of(event.logprobs) if logprobs else None)
            elif isinstance(event, Completion):
                for answer in event.answers:
                    if answer.tool_calls:
                        yield chunk(answer.index, Delta(tool_calls=[ToolCallDelta(
                            index=k, id=c.id, type="function", function=FunctionDelta(name=c.name, arguments=c.arguments))
                            for k, c in enumerate(answer.tool_calls)]))
                    elif answer.index in held:  # held, but not a call after all
                        yield chunk(answer.index, Delta(content=held[answer.index]))
                    yield chunk(answer.index, finish=answer.finish_reason.value)
                if include_usage:
                    yield _event(ChatCompletionChunk(id=rid, model=model, usage=UsageBody.of(event.usage)))
    except EngineError as exc:
        yield _event(ChatCompletionChunk(id=rid, model=model, error=ErrorBody.of(exc)))
    yield "data: [DONE]\n\n"


async def completion_events(ticket: StreamingTicket, model: str, body: CompletionRequest, prompt: str,
                            include_usage: bool) -> AsyncIterator[str]:
    """A text completion's chunks (OpenAI's legacy shape), each answer's under its ``index``; the
    prompt first when ``echo`` asks."""
    rid = f"cmpl-{ticket.seq_ids[0]}"
    offsets = [len(prompt) if body.echo else 0] * len(ticket.seq_ids)

    def chunk(choice: CompletionChoice) -> str:
        return f"data: {TextCompletion(id=rid, model=model, choices=[choice]).model_dump_json(exclude_none=True)}\n\n"

    if body.echo:
        for index in range(len(ticket.seq_ids)):
            yield chunk(CompletionChoice(index=index, text=prompt))
    try:
        async for event in ticket.events():
            if isinstance(event, TokenDelta):
                logprobs = None
                if body.logprobs is not None:
                    logprobs = CompletionLogprobs.of(event.logprobs, offsets[event.choice], bool(body.logprobs))
                offsets[event.choice] += len(event.text)
                yield chunk(CompletionChoice(index=event.choice, text=event.text, logprobs=logprobs))
            elif isinstance(event, Completion):
                for answer in event.answers:
                    yield chunk(CompletionChoice(index=answer.index, text="", finish_reason=answer.finish_reason.value))
                if include_usage:
                    usage = TextCompletion(id=rid, model=model, choices=[], usage=UsageBody.of(event.usage))
                    yield f"data: {usage.model_dump_json(exclude_none=True)}\n\n"
    except EngineError as exc:
        yield _event(ChatCompletionChunk(id=rid, model=model, error=ErrorBody.of(exc)))
    yield "data: [DONE]\n\n"


def _event(chunk: ChatCompletionChunk) -> str:
    return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
