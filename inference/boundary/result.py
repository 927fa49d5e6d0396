"""What comes back for a request: text deltas while it runs, then one Completion."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    ERROR = "error"
    TOOL_CALLS = "tool_calls"  # the answer is calls of the chat's tools

    @classmethod
    def parse(cls, reason: object) -> FinishReason:
        """A reason read from a wire; an unknown or missing one is STOP."""
        try:
            return cls(str(reason or "stop"))
        except ValueError:
            return cls.STOP


@dataclass(frozen=True, kw_only=True)
class TokenLogprob:
    """One generated token: its text, its log probability, and the ``top`` likeliest tokens at that
    step with theirs (likeliest first). Taken from the model's raw distribution, before penalties,
    biases, temperature and format masks (vLLM's default), so a format or a penalty can make the
    chosen token one the model itself found unlikely."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, kw_only=True)
class TokenDelta:
    """A piece of text from a stream; ``index`` counts the deltas of that request from 0, and
    ``tokens`` is how many generated tokens it carries (a delta may join several, or follow
    tokens that held no complete character yet), so that the tokens streamed so far are known
    even if the stream never ends."""

    index: int
    text: str
    tokens: int = 1
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens this delta carries, when the request asked
    choice: int = 0  # which of the request's ``n`` answers it belongs to; ``index`` counts per choice


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, kw_only=True)
class Timings:
    """Milliseconds from arrival: until scheduled (None where nobody measured it), until the first
    token, until done."""

    queued_ms: float | None
    first_token_ms: float | None
    total_ms: float


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A call the model made: ``arguments`` is JSON text (valid against the tool's schema when the
    engine constrained it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class Choice:
    """One of a request's ``n`` answers."""

    index: int
    text: str
    finish_reason: FinishReason
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Completion:
    """A request's end. ``text``, ``finish_reason`` and ``logprobs`` are its first answer's;
    ``choices`` holds every answer when it asked for more than one (``answers`` reads both cases).
    ``usage`` counts the prompt once and the tokens of every answer."""

    request_id: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    logprobs: tuple[TokenLogprob, ...] | None = None  # every generated token's, when the request asked
    choices: tuple[Choice, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()  # with finish_reason TOOL_CALLS; ``text`` is what came before them
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None  # the prompt's tokens but the first, when the request asked

    @property
    def answers(self) -> tuple[Choice, ...]:
        """Every answer, the first included, in order."""
        return self.choices or (Choice(index=0, text=self.text, finish_reason=self.finish_reason, logprobs=self.logprobs,
                                       tool_calls=self.tool_calls),)
