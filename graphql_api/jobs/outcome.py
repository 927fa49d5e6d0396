"""A job item's end as the job store keeps it: the ``result`` column of ``batch_items``, as JSON.

The store's own row type, so that what it keeps changes only when it means to (never because the
inference service's HTTP models did). Its JSON keeps the names and nesting that rows have always
had (those of OpenAI's chat completion, as the first rows were written), so rows written by any
version load, and older code reads the rows this one writes. Keys rows may carry that are not read
here (``type`` and ``param`` of an error, ``bytes`` of a logprob, ``total_tokens``, a message's
``role``) are ignored, and every member may be missing or null.

The store holds the outcome, not a response: the job's output file (``output``) and GraphQL's
``results`` each build theirs from ``completion()`` or ``error``, so both read alike every row.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from inference.boundary import Choice, Completion, EngineError, FinishReason, Timings, TokenLogprob, ToolCall, Usage
from inference.service.wire import ErrorBody


class Stored(BaseModel):
    """A part of a stored outcome: immutable once made (outcomes are shared, as the store's constants)."""

    model_config = ConfigDict(frozen=True)


class ItemError(Stored):
    """Why an item failed: ``code`` an ErrorCode's value, ``field`` in the boundary's names."""

    code: str | None = None
    message: str
    field: str | None = None

    @classmethod
    def of(cls, exc: EngineError) -> ItemError:
        """In OpenAI's words (``max_tokens must be …``): a job's items are OpenAI requests, and its
        errors read as ``/v1/chat/completions`` would say them."""
        body = ErrorBody.of(exc)
        return cls(code=exc.code.value, message=body.message, field=exc.field)


class StoredUsage(Stored):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class StoredTimings(Stored):
    queued_ms: float | None = None
    first_token_ms: float | None = None
    total_ms: float = 0.0


class StoredAlternative(Stored):
    token: str
    logprob: float


class StoredLogprob(StoredAlternative):
    top_logprobs: list[StoredAlternative] = Field(default_factory=list)


class StoredLogprobs(Stored):
    """One entry per generated token (``content``), as OpenAI nests them."""

    content: list[StoredLogprob] | None = None

    @classmethod
    def of(cls, entries: tuple[TokenLogprob, ...] | None) -> StoredLogprobs | None:
        if entries is None:
            return None
        return cls(content=[StoredLogprob(token=e.token, logprob=e.logprob, top_logprobs=[
            StoredAlternative(token=t, logprob=v) for t, v in e.top]) for e in entries])

    def entries(self) -> tuple[TokenLogprob, ...]:
        return tuple(TokenLogprob(token=e.token, logprob=e.logprob, top=tuple((t.token, t.logprob) for t in e.top_logprobs))
                     for e in self.content or ())


def logprobs_of(stored: StoredLogprobs | None) -> tuple[TokenLogprob, ...] | None:
    return stored.entries() if stored is not None else None


class StoredFunction(Stored):
    name: str
    arguments: str  # JSON text


class StoredCall(Stored):
    id: str
    function: StoredFunction

    @classmethod
    def of(cls, call: ToolCall) -> StoredCall:
        return cls(id=call.id, function=StoredFunction(name=call.name, arguments=call.arguments))

    def to_call(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.function.name, arguments=self.function.arguments)


def calls_of(calls: tuple[ToolCall, ...]) -> list[StoredCall] | None:
    return [StoredCall.of(c) for c in calls] or None


class StoredMessage(Stored):
    content: str | None = ""  # null when the answer is calls alone
    tool_calls: list[StoredCall] | None = None


class StoredChoice(Stored):
    """One of several answers (a request with ``n`` > 1)."""

    index: int = 0
    message: StoredMessage
    finish_reason: str | None = None
    logprobs: StoredLogprobs | None = None

    @classmethod
    def of(cls, a: Choice) -> StoredChoice:
        calls = calls_of(a.tool_calls)
        return cls(index=a.index, message=StoredMessage(content=a.text or (None if calls else ""), tool_calls=calls),
                   finish_reason=a.finish_reason.value, logprobs=StoredLogprobs.of(a.logprobs))

    def to_choice(self) -> Choice:
        return Choice(index=self.index, text=self.message.content or "", finish_reason=FinishReason.parse(self.finish_reason),
                      logprobs=logprobs_of(self.logprobs), tool_calls=tuple(c.to_call() for c in self.message.tool_calls or ()))


class ItemOutcome(Stored):
    """A completion (its first answer's ``text``, ``finish_reason``, ``logprobs`` and ``tool_calls``,
    every answer in ``choices`` when there are several), or ``error``."""

    text: str | None = None
    finish_reason: str | None = None
    usage: StoredUsage | None = None
    timings: StoredTimings | None = None
    error: ItemError | None = None
    logprobs: StoredLogprobs | None = None
    choices: list[StoredChoice] | None = None
    tool_calls: list[StoredCall] | None = None

    @classmethod
    def of(cls, result: Completion | EngineError) -> ItemOutcome:
        if isinstance(result, EngineError):
            return cls(error=ItemError.of(result))
        t = result.timings
        return cls(text=result.text, finish_reason=result.finish_reason.value,
                   usage=StoredUsage(prompt_tokens=result.usage.prompt_tokens, completion_tokens=result.usage.completion_tokens),
                   timings=StoredTimings(queued_ms=t.queued_ms, first_token_ms=t.first_token_ms, total_ms=t.total_ms),
                   logprobs=StoredLogprobs.of(result.logprobs),
                   choices=[StoredChoice.of(a) for a in result.choices] or None, tool_calls=calls_of(result.tool_calls))

    @classmethod
    def load(cls, text: str) -> ItemOutcome:
        return cls.model_validate_json(text)

    def dump(self) -> str:
        return self.model_dump_json(exclude_none=True)

    def completion(self, request_id: str) -> Completion:
        """The Completion this outcome holds (``error`` is None). With several answers, ``choices``
        is the whole of it, the first answer on top."""
        assert self.error is None, "an item that failed has no completion"
        if self.choices:
            answers = sorted((c.to_choice() for c in self.choices), key=lambda c: c.index)
        else:
            answers = [Choice(index=0, text=self.text or "", finish_reason=FinishReason.parse(self.finish_reason),
                              logprobs=logprobs_of(self.logprobs), tool_calls=tuple(c.to_call() for c in self.tool_calls or ()))]
        first = answers[0]
        usage, t = self.usage or StoredUsage(), self.timings or StoredTimings()
        return Completion(request_id=request_id, text=first.text, finish_reason=first.finish_reason,
                          usage=Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens),
                          timings=Timings(queued_ms=t.queued_ms, first_token_ms=t.first_token_ms, total_ms=t.total_ms),
                          logprobs=first.logprobs, choices=tuple(answers) if len(answers) > 1 else (), tool_calls=first.tool_calls)
