"""Typed errors. Each has a stable ``code`` and a message that names what was wrong; ``field``
names the offending field with the boundary's neutral names (``max_new_tokens``, ``messages``)."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Every code a chat can end with, on every edge (GraphQL's ``ChatErrorCode`` is this enum)."""

    INVALID_INPUT = "INVALID_INPUT"
    PROMPT_TOO_LONG = "PROMPT_TOO_LONG"
    DUPLICATE_CHAT_ID = "DUPLICATE_CHAT_ID"
    OVERLOADED = "OVERLOADED"
    RATE_LIMITED = "RATE_LIMITED"
    TIMEOUT = "TIMEOUT"
    INCOMPLETE_OUTPUT = "INCOMPLETE_OUTPUT"  # a response format left incomplete; the partial text is kept
    CANCELLED = "CANCELLED"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"  # the API key is missing, wrong, revoked or expired
    INTERNAL = "INTERNAL"

    @classmethod
    def parse(cls, code: object) -> ErrorCode:
        """A code read from a wire; an unknown one is INTERNAL."""
        return cls.__members__.get(str(code), cls.INTERNAL)


class EngineError(Exception):
    """Base of every error reported for a request."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(EngineError):
    code = ErrorCode.INVALID_INPUT


class PromptTooLong(EngineError):
    code = ErrorCode.PROMPT_TOO_LONG

    def __init__(self, prompt_tokens: int | None, max_new_tokens: int | None, limit: int | None,
                 message: str | None = None) -> None:
        """Our engine knows all three numbers; an upstream's own message is kept when it does not."""
        if message is None:
            message = (f"prompt has {prompt_tokens} tokens and asks for {max_new_tokens} new tokens: "
                       f"{(prompt_tokens or 0) + (max_new_tokens or 0)} exceeds the context limit of {limit} tokens")
        super().__init__(message, field="messages")
        self.prompt_tokens = prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.limit = limit


class Overloaded(EngineError):
    code = ErrorCode.OVERLOADED


class RequestTimeout(EngineError):
    code = ErrorCode.TIMEOUT


class RequestCancelled(EngineError):
    code = ErrorCode.CANCELLED


class EngineFault(EngineError):
    """A model step (or one request's preparation or sampling) failed."""

    code = ErrorCode.INTERNAL


class EngineStopped(EngineError):
    code = ErrorCode.UNAVAILABLE


class Unauthenticated(EngineError):
    """The API key behind the request is missing, wrong, revoked or expired."""

    code = ErrorCode.UNAUTHENTICATED


class Unavailable(EngineError):
    """A remote inference upstream is unreachable or failing."""

    code = ErrorCode.UNAVAILABLE


class UpstreamError(EngineError):
    """An error an inference upstream reported, with its code kept."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


class InvalidOption(InvalidRequest):
    """An option out of range. ``detail`` lacks the option's name, so that each edge can say it in
    its own words (``maxTokens must be …``, ``max_tokens must be …``)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field} {detail}", field=field)
        self.detail = detail
